//! The CLI's side of the admin commands (`wharf gc`, `fsck`, `leases`, `images`, `status`, `push
//! status|retry|drop`): each asks the running server over its admin socket, and works on the files
//! directly (`app::offline`) when no server runs.

use crate::admin::AdminError;
use crate::admin::LeaseEntry;
use crate::admin_socket::ask;
use crate::app::offline;
use crate::app::offline_with;
use http::Method;
use http::StatusCode;
use wharf_storage::gc::Report;

/// Runs a collection through the server on the data directory, or on the files when none runs.
pub async fn gc(cfg: &wharf_model::config::Config, dry_run: bool) -> Result<Report, AdminError> {
    let path = if dry_run { "/gc?dry_run=1" } else { "/gc" };
    match ask(&cfg.storage.data_dir, Method::POST, path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused the collection ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let admin = offline(cfg).await?;
            admin
                .collector
                .collect(dry_run)
                .await
                .map_err(|e| AdminError::Failed(e.to_string()))
        }
    }
}

/// A scrub pass (`wharf fsck`) through the server on the data directory, or on the files when none
/// runs (then the metadata's pages are checked first).
pub async fn fsck(
    cfg: &wharf_model::config::Config,
    max_bytes_per_sec: Option<u64>,
) -> Result<wharf_storage::scrub::Report, AdminError> {
    let path = match max_bytes_per_sec {
        Some(n) => format!("/fsck?max_bytes_per_sec={n}"),
        None => "/fsck".to_owned(),
    };
    match ask(&cfg.storage.data_dir, Method::POST, &path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server's scrub failed ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let admin = offline_with(cfg, true).await.map_err(|e| match e {
                AdminError::Damaged(m) => AdminError::Damaged(format!(
                    "{m}\nfsck could not repair it. Restore meta.redb from a backup; or move it \
                     aside (`mv meta.redb meta.redb.damaged` in the data directory) and start \
                     wharf with empty metadata: mirrored images are fetched again, pushed tags \
                     must be pushed again, and the content stays on disk until the collector \
                     removes what no tag names"
                )),
                e => e,
            })?;
            admin
                .scrub
                .run(max_bytes_per_sec)
                .await
                .map_err(|e| AdminError::Failed(e.to_string()))
        }
    }
}

/// The live leases, from the server or the files.
pub async fn leases(cfg: &wharf_model::config::Config) -> Result<Vec<LeaseEntry>, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/leases").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => Ok(offline(cfg).await?.lease_entries()),
    }
}

/// Ends a lease now.
pub async fn release_lease(
    cfg: &wharf_model::config::Config,
    id: &str,
) -> Result<bool, AdminError> {
    let path = format!("/leases/{id}");
    match ask(&cfg.storage.data_dir, Method::DELETE, &path).await? {
        Some((StatusCode::NO_CONTENT, _)) => Ok(true),
        Some((StatusCode::NOT_FOUND, _)) => Ok(false),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => offline(cfg)
            .await?
            .leases
            .release(id)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// What wharf holds (or, with `dangling`, what no tag reaches), from the server or the files.
pub async fn images(
    cfg: &wharf_model::config::Config,
    dangling: bool,
) -> Result<Vec<wharf_storage::images::Image>, AdminError> {
    let path = if dangling {
        "/images?dangling=1"
    } else {
        "/images"
    };
    match ask(&cfg.storage.data_dir, Method::GET, path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => wharf_storage::images::list(&offline(cfg).await?.collector, dangling)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// `wharf status`: from the server (with its counters), or the files when none runs.
pub async fn status(
    cfg: &wharf_model::config::Config,
) -> Result<crate::status::Status, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/status").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => crate::status::collect(&offline(cfg).await?, false)
            .await
            .map_err(|e| AdminError::Failed(e.to_string())),
    }
}

/// The push journal, from the server or the files.
pub async fn pushes(
    cfg: &wharf_model::config::Config,
) -> Result<Vec<crate::push::DeliveryStatus>, AdminError> {
    match ask(&cfg.storage.data_dir, Method::GET, "/pushes").await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => offline(cfg)
            .await?
            .push
            .status()
            .await
            .map_err(|e| AdminError::Failed(e.message)),
    }
}

/// `wharf push retry ID` (`retry`) or `wharf push drop ID`: the delivery as it is now, `None` when the
/// journal has no such entry. Without a server, a retried delivery goes at its next start.
pub async fn push_action(
    cfg: &wharf_model::config::Config,
    id: u64,
    retry: bool,
) -> Result<Option<crate::push::DeliveryStatus>, AdminError> {
    let (method, path) = if retry {
        (Method::POST, format!("/pushes/{id}/retry"))
    } else {
        (Method::DELETE, format!("/pushes/{id}"))
    };
    match ask(&cfg.storage.data_dir, method, &path).await? {
        Some((StatusCode::OK, body)) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| AdminError::Failed(format!("unreadable answer from the server: {e}"))),
        Some((StatusCode::NOT_FOUND, _)) => Ok(None),
        Some((status, body)) => Err(AdminError::Failed(format!(
            "the server refused ({status}): {}",
            String::from_utf8_lossy(&body)
        ))),
        None => {
            let push = offline(cfg).await?.push;
            let done = if retry {
                push.retry(id).await
            } else {
                push.drop_delivery(id).await
            };
            done.map_err(|e| AdminError::Failed(e.message))
        }
    }
}
