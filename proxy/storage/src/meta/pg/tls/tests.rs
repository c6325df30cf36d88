//! The connection string's TLS parameters, and what each does against a real Postgres with TLS on
//! (`Postgres::start_tls`: a certificate from a CA wharf does not know, as Debian's snakeoil one is).

use super::*;
use crate::meta::db::{Backend, Meta};
use crate::meta::pg::probe;
use crate::meta::MetaError;
#[test]
fn libpq_tls_parameters_are_taken_out_and_applied() {
    let t = parse("postgres://u@h:5/db?sslmode=verify-full&application_name=x").unwrap();
    assert_eq!(t.verify, Verify::Full);
    assert_eq!(t.cfg.get_ssl_mode(), SslMode::Require);
    assert_eq!(t.cfg.get_application_name(), Some("x"));
    let t = parse("postgres://u@h/db").unwrap();
    assert_eq!(
        (t.verify, t.cfg.get_ssl_mode()),
        (Verify::Nothing, SslMode::Prefer)
    );
    let t = parse("host=h user=u sslmode=verify-ca").unwrap();
    assert_eq!(t.verify, Verify::Chain);
    assert_eq!(t.cfg.get_user(), Some("u"));
    let t = parse("postgres://u@h/db?sslmode=disable").unwrap();
    assert_eq!(t.cfg.get_ssl_mode(), SslMode::Disable);
    let t = parse("postgres://u@h/db?sslmode=require&sslrootcert=system").unwrap();
    assert_eq!(
        t.verify,
        Verify::Nothing,
        "system roots alone do not make require verify"
    );
    let e = parse("postgres://u@h/db?sslmode=verify").unwrap_err();
    assert!(e.contains("sslmode=verify is not one of"), "{e}");
    let e = parse("postgres://u@h/db?sslmode=require&sslrootcert=%2Fno%2Fsuch.pem").unwrap_err();
    assert!(e.contains("sslrootcert /no/such.pem"), "{e}");
}

/// Whether the connection the pool hands out is encrypted (Postgres's own view).
async fn encrypted(m: &Meta) -> bool {
    let Backend::Pg(pg) = &m.backend else {
        unreachable!()
    };
    let c = pg.client().await.unwrap();
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn with(url: &str, params: &str) -> String {
    format!("{url}?{params}")
}

/// A URL psql connects with works here the same way: with TLS on and a certificate no public CA
/// signed, the default (`prefer`) and `require` connect encrypted, `disable` in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_on_is_used_as_psql_uses_it() {
    let pg =
        tokio::task::spawn_blocking(|| wharf_test_servers::Postgres::start_tls(&["127.0.0.1"]))
            .await
            .unwrap();
    let m = Meta::open_postgres(&pg.url()).await.unwrap();
    assert!(
        encrypted(&m).await,
        "prefer (the default) uses TLS when offered"
    );
    m.wait_listening().await;
    let m = Meta::open_postgres(&with(&pg.url(), "sslmode=require"))
        .await
        .unwrap();
    assert!(encrypted(&m).await);
    let m = Meta::open_postgres(&with(&pg.url(), "sslmode=disable"))
        .await
        .unwrap();
    assert!(!encrypted(&m).await);
}

fn tls_error(e: MetaError) -> String {
    match e {
        MetaError::Tls { detail, .. } => detail,
        other => panic!("not a TLS failure: {other:?}"),
    }
}

/// `verify-full` checks the chain (against `sslrootcert`, or the public roots) and the host name;
/// `verify-ca` the chain only; `require` with an `sslrootcert` the chain too. A failed check is a
/// TLS refusal saying why, never a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_modes_check_the_chain_and_the_name() {
    let (named, misnamed) = tokio::task::spawn_blocking(|| {
        (
            wharf_test_servers::Postgres::start_tls(&["127.0.0.1"]),
            wharf_test_servers::Postgres::start_tls(&["db.example"]),
        )
    })
    .await
    .unwrap();
    let ca = named.ca_path().unwrap().display().to_string();
    let other_ca = misnamed.ca_path().unwrap().display().to_string();

    let e = tls_error(
        probe(&with(&named.url(), "sslmode=verify-full"))
            .await
            .unwrap_err(),
    );
    assert!(
        e.contains("UnknownIssuer"),
        "public roots do not know a private CA: {e}"
    );
    let m = Meta::open_postgres(&with(
        &named.url(),
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    assert!(encrypted(&m).await);

    let misnamed_ca = format!("sslrootcert={other_ca}");
    let e = tls_error(
        probe(&with(
            &misnamed.url(),
            &format!("sslmode=verify-full&{misnamed_ca}"),
        ))
        .await
        .unwrap_err(),
    );
    assert!(e.contains("not valid for name"), "{e}");
    probe(&with(
        &misnamed.url(),
        &format!("sslmode=verify-ca&{misnamed_ca}"),
    ))
    .await
    .unwrap();

    // require + a root file checks the chain (libpq's rule): the other cluster's CA is not it.
    probe(&with(
        &named.url(),
        &format!("sslmode=require&sslrootcert={ca}"),
    ))
    .await
    .unwrap();
    let e = tls_error(
        probe(&with(
            &named.url(),
            &format!("sslmode=require&sslrootcert={other_ca}"),
        ))
        .await
        .unwrap_err(),
    );
    // Another CA of the same name: the signature does not verify.
    assert!(e.contains("invalid peer certificate"), "{e}");
}

/// A server without TLS fails every mode that requires it as a TLS refusal; `prefer` connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_tls_refuses_modes_that_require_it() {
    let pg = tokio::task::spawn_blocking(wharf_test_servers::Postgres::start)
        .await
        .unwrap();
    for mode in ["require", "verify-ca", "verify-full"] {
        let e = tls_error(
            probe(&with(&pg.url(), &format!("sslmode={mode}")))
                .await
                .unwrap_err(),
        );
        assert!(e.contains("TLS"), "{mode}: {e}");
    }
    probe(&pg.url()).await.unwrap();
}
