"""The official Python client (kurrentdbclient) against the embedded event store, with its
defaults: read_all() and subscribe_to_all() send the client's default exclude filter, a .NET
negative look-ahead. Run by .ci/python-client; an assertion that fails fails CI."""

import sys
import threading
import uuid

from kurrentdbclient import KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.exceptions import KurrentDBClientError

client = KurrentDBClient(uri=f"kurrentdb://{sys.argv[1]}?Tls=false")
stream = f"order-{uuid.uuid4()}"
position = client.append_to_stream(
    stream,
    current_version=StreamState.NO_STREAM,
    events=[NewEvent(type="OrderPlaced", data=b'{"n": 1}')],
)
client.append_to_stream(
    stream,
    current_version=0,
    events=[NewEvent(type="OrderShipped", data=b'{"n": 2}')],
)
client.set_stream_metadata(stream, metadata={"$maxAge": 3600})
assert position > 0
assert client.get_current_version(stream) == 1
assert [e.type for e in client.get_stream(stream)] == ["OrderPlaced", "OrderShipped"]

# The defaults: system events ($metadata and the like) are left out by the look-ahead.
everything = list(client.read_all())
types = [e.type for e in everything]
assert types[-2:] == ["OrderPlaced", "OrderShipped"], types
assert not any(e.stream_name.startswith("$") for e in everything), types
assert client.get_commit_position() >= everything[-1].commit_position

# Excluding nothing shows the stream metadata as the real server writes it: a $metadata event
# in $$stream.
unfiltered = [(e.stream_name, e.type) for e in client.read_all(filter_exclude=[])]
assert (f"$${stream}", "$metadata") in unfiltered, unfiltered

# Include filters become ^(a|b)$ on the server.
shipped = list(client.read_all(filter_include=["Order.*ped"]))
assert [e.type for e in shipped] == ["OrderShipped"], shipped

# A catch-up subscription with the default filter, from the start, into live.
received = []
subscription = client.subscribe_to_all()


def follow():
    for event in subscription:
        received.append(event.type)
        if event.type == "OrderCancelled":
            break


reader = threading.Thread(target=follow)
reader.start()
client.append_to_stream(
    stream,
    current_version=1,
    events=[NewEvent(type="OrderCancelled", data=b'{"n": 3}')],
)
reader.join(timeout=10)
subscription.stop()
assert received[-3:] == ["OrderPlaced", "OrderShipped", "OrderCancelled"], received

# A malformed expression is refused, not ignored.
try:
    list(client.read_all(filter_include=["(unclosed"]))
except KurrentDBClientError:
    pass
else:
    raise AssertionError("a malformed filter was accepted")

print(f"kurrentdbclient: {len(everything)} events read with the default filter, subscription live, bad filter refused")
