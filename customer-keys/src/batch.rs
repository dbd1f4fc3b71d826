//! Group commit for the key store: every request waiting at a moment goes into one statement,
//! so that with many commands at once PostgreSQL runs a few statements, not one per command
//! (the event store's writer does the same with appends).

use std::future::Future;

use events::KeyError;
use tokio::sync::{mpsc, oneshot};

/// The largest batch one statement takes.
const MAX_BATCH: usize = 512;

type Reply<T> = oneshot::Sender<Result<T, KeyError>>;

/// Where requests are sent; a task started by [`Batcher::start`] answers them.
pub struct Batcher<Req, Resp> {
    requests: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Batcher {
            requests: self.requests.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// `run` answers a batch with one response per request, in order. The task ends when the
    /// last `Batcher` is dropped.
    pub fn start<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Resp>, KeyError>> + Send,
    {
        let (requests, mut waiting) = mpsc::channel::<(Req, Reply<Resp>)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.into_iter().unzip();
                match run(requests).await {
                    Ok(responses) => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                    Err(e) => {
                        let message = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(KeyError::Store(message.clone())));
                        }
                    }
                }
            }
        });
        Batcher { requests }
    }

    /// Sends one request and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, KeyError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .await
            .map_err(|_| KeyError::Store("the key store stopped".into()))?;
        answer
            .await
            .map_err(|_| KeyError::Store("the key store stopped".into()))?
    }
}
