//! The peer listener (`[cluster] peer_listen`): requests the other replicas forward here, for the
//! upload sessions this replica holds. Each must carry a valid `Wharf-Peer` signature (`cluster.rs`);
//! anything else, or any other endpoint, is refused: the listener serves no content to a caller that
//! is not a replica.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cluster::FromPeer;
use crate::registry::Registry;
use wharf_model::request::ClientAddr;
use wharf_protocol::body::Body;
use wharf_protocol::route::{route, Route};

/// Serves the other replicas until `shutdown` resolves.
pub async fn serve(
    registry: Arc<Registry>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let registry = registry.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |mut req: Request<Incoming>| {
                        let registry = registry.clone();
                        req.extensions_mut().insert(ClientAddr(peer));
                        async move { Ok::<_, Infallible>(answer(&registry, req).await) }
                    });
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "peer connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => return,
        }
    }
}

fn refuse(status: StatusCode, why: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(why.as_bytes())));
    *r.status_mut() = status;
    r
}

async fn answer(registry: &Registry, mut req: Request<Incoming>) -> Response<Body> {
    let Some(cluster) = registry.cluster() else {
        return refuse(StatusCode::NOT_FOUND, "no cluster is configured here\n");
    };
    if let Err(why) = cluster.verify(&req) {
        let peer = req.extensions().get::<ClientAddr>().map(|a| a.0);
        tracing::warn!(peer = ?peer, reason = why, path = %req.uri().path(), "refused a request on the peer listener");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this is a wharf peer listener: only replicas of this cluster (requests signed with its \
             secret) are served here\n",
        );
    }
    match route(req.method(), req.uri().path()) {
        Ok(Route::Upload(..)) => {
            req.extensions_mut().insert(FromPeer);
            registry.handle(req).await
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "the peer listener serves upload sessions only\n",
        ),
    }
}
