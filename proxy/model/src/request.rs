//! What a request is to every phase after routing: what it does (`Operation`), who asks (`Caller`,
//! `ClientAddr`), and the request as policy plugins are told it (`RequestCtx`, the WIT `request`).

use std::net::SocketAddr;
use std::sync::Arc;

pub use crate::operation::Operation;
use crate::scope::Access;

/// What a plugin is told about a request (the WIT `request` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCtx {
    pub operation: Operation,
    /// The upstream host for mirrored content; none for wharf's own repositories.
    pub registry: Option<String>,
    pub repository: String,
    pub reference: Option<String>,
    pub client_address: String,
    pub identity: Option<String>,
    pub user_agent: Option<String>,
}

/// Who is calling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The identity a credential proved; `None` for an anonymous caller.
    pub identity: Option<String>,
    /// Whether the request carried a valid credential (an anonymous token counts).
    pub credentialed: bool,
    /// What the token from wharf's `/token` grants; `None` for a credential that is not scoped (Basic,
    /// a static token, the operator), which the rules judge by its identity alone.
    pub access: Option<Arc<Access>>,
}

impl Caller {
    /// The identity of a request that came through the admin socket (see [`Operator`]).
    pub const OPERATOR: &'static str = "wharf-admin";

    pub fn operator() -> Caller {
        Caller {
            identity: Some(Caller::OPERATOR.to_owned()),
            credentialed: true,
            access: None,
        }
    }
}

/// Marks a request that reached the registry through the admin socket: whoever can open that socket
/// (mode 0600 in the data directory) can read and write the data directory itself, so it passes the
/// rules as the operator. Only wharf inserts it; nothing from the network becomes an extension.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

/// The client's address, put on each request by the server.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Who sent a request, as the plugins see it: read once per request, after the identify phase, and
/// put on the request so every policy check of it (access, rewrites, platform choice, pushes) builds
/// its `RequestCtx` from the same facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sender {
    pub client_address: String,
    pub identity: Option<String>,
    pub user_agent: Option<String>,
}
