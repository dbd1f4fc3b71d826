"""The official Python client (kurrentdbclient) against the embedded event store, with its
defaults: read_all() and subscribe_to_all() send the client's default exclude filter, a .NET
negative look-ahead. Run by .ci/python-client; an assertion that fails fails CI."""

import sys
import threading
import time
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

# The system projections: the stream's events linked into $ce-order, resolved by the client; the
# four built-ins running; a user (JavaScript) projection refused with the reason.
from kurrentdbclient.exceptions import FailedPreconditionError

for _ in range(200):
    linked = [
        (e.stream_name, e.type)
        for e in client.get_stream("$ce-order", resolve_links=True)
        if e.stream_name == stream
    ]
    if len(linked) == 3:
        break
    time.sleep(0.05)
assert linked == [(stream, "OrderPlaced"), (stream, "OrderShipped"), (stream, "OrderCancelled")], linked
running = {p.name: p.status for p in client.list_continuous_projection_statistics()}
assert running == {
    "$by_category": "Running",
    "$by_event_type": "Running",
    "$stream_by_category": "Running",
    "$streams": "Running",
}, running
try:
    client.create_projection(name="counter", query="fromAll().when({})")
except FailedPreconditionError as refused:
    assert "JavaScript" in str(refused), refused
else:
    raise AssertionError("a user projection was accepted")

# Persistent subscriptions: a consumer group on a stream, with acks, a parked event replayed,
# the group's figures, and the client's exceptions for an existing or missing group.
from kurrentdbclient.exceptions import AlreadyExistsError, NotFoundError

orders = f"order-{uuid.uuid4()}"
client.append_to_stream(
    orders,
    current_version=StreamState.NO_STREAM,
    events=[NewEvent(type="OrderPlaced", data=b'{"n": %d}' % i) for i in range(3)],
)
client.create_subscription_to_stream("billing", orders, min_checkpoint_count=1, max_checkpoint_count=1)
try:
    client.create_subscription_to_stream("billing", orders)
except AlreadyExistsError:
    pass
else:
    raise AssertionError("a second group of the same name was accepted")
group = client.read_subscription_to_stream("billing", orders)
delivered = []
for event in group:
    delivered.append((event.stream_position, event.retry_count))
    if event.stream_position == 1:
        group.nack(event, action="park")
    else:
        group.ack(event)
    if len(delivered) == 3:
        break
assert delivered == [(0, 0), (1, 0), (2, 0)], delivered
# The client sends acks and nacks in batches: the park is done once the group counts it.
for _ in range(100):
    if client.get_subscription_info("billing", orders).parked_message_count == 1:
        break
    time.sleep(0.05)
else:
    raise AssertionError("the nacked event was not parked")
client.replay_parked_events("billing", orders)
for event in group:
    assert event.stream_position == 1, event
    group.ack(event)
    break
group.stop()
info = client.get_subscription_info("billing", orders)
assert info.event_source == orders and info.group_name == "billing", info
assert info.start_from == "0", info.start_from
assert info.consumer_strategy == "DispatchToSingle", info.consumer_strategy
assert any(i.group_name == "billing" for i in client.list_subscriptions_to_stream(orders))
client.delete_subscription("billing", orders)
try:
    client.get_subscription_info("billing", orders)
except NotFoundError:
    pass
else:
    raise AssertionError("a deleted group still answered")

print(f"kurrentdbclient: {len(everything)} events read with the default filter, subscription live, bad filter refused, $ce-order linked and resolved, user projections refused, a persistent subscription consumed, parked and replayed")
