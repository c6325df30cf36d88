//! The shared backends' settings as the server and `check-config` read them: credentials resolved
//! from the environment or files (never from the config file itself), and each failure to reach a
//! backend said once, naming it and the key to fix.

use wharf_model::config::{Config, MetadataBackend, StorageBackend};
use wharf_storage::meta::MetaError;
use wharf_storage::store::{S3Settings, StoreError};

/// One secret from `<key>_env` or `<key>_file`, whichever is set (exactly one must be).
fn secret(
    section: &str,
    key: &str,
    env: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<String, String> {
    match (env, file) {
        (Some(var), None) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            _ => Err(format!(
                "{section}.{key}_env names the environment variable {var}, which is not set: set it, \
                 or use {section}.{key}_file"
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
            Ok(_) => Err(format!(
                "{section}.{key}_file {} is empty: write the value into it",
                path.display()
            )),
            Err(e) => Err(format!(
                "{section}.{key}_file {}: cannot read it ({e})",
                path.display()
            )),
        },
        (Some(_), Some(_)) => Err(format!(
            "{section}: set one of {key}_env and {key}_file, not both"
        )),
        (None, None) => Err(format!(
            "{section}: set {key}_env (an environment variable holding it) or {key}_file"
        )),
    }
}

/// `[storage.s3]` with its keys read.
pub fn s3_settings(cfg: &Config) -> Result<S3Settings, String> {
    let Some(s3) = &cfg.storage.s3 else {
        return Err(
            "storage.backend is \"s3\" but there is no [storage.s3] section: add one with \
                    endpoint, bucket and the access key settings (see README: shared backends)"
                .into(),
        );
    };
    if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://")) {
        return Err(format!(
            "storage.s3.endpoint {:?} is not an http:// or https:// URL: write the S3 API's address, \
             e.g. http://127.0.0.1:3900",
            s3.endpoint
        ));
    }
    if s3.bucket.is_empty() {
        return Err("storage.s3.bucket is empty: name the bucket wharf stores content in".into());
    }
    let access_key_id = secret(
        "storage.s3",
        "access_key_id",
        s3.access_key_id_env.as_deref(),
        s3.access_key_id_file.as_deref(),
    )?;
    let secret_access_key = secret(
        "storage.s3",
        "secret_access_key",
        s3.secret_access_key_env.as_deref(),
        s3.secret_access_key_file.as_deref(),
    )?;
    Ok(S3Settings {
        endpoint: s3.endpoint.trim_end_matches('/').to_owned(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        prefix: s3.prefix.clone(),
        access_key_id,
        secret_access_key,
        cache_max_bytes: s3.cache_max_bytes,
    })
}

/// Why the object store would not open, and what to do.
pub fn s3_refusal(endpoint: &str, e: &StoreError) -> String {
    match e {
        StoreError::Unavailable { detail, .. } => format!(
            "cannot reach the object store {endpoint}: {detail}; check storage.s3.endpoint and that \
             the store is running and reachable from here"
        ),
        StoreError::Refused { detail, .. } => {
            format!("the object store {endpoint} refused wharf: {detail}")
        }
        e => format!("cannot open the object store {endpoint}: {e}"),
    }
}

/// The Postgres URL, password included: `url` plus `password_env`/`password_file`, or `url_env`.
pub fn postgres_url(cfg: &Config) -> Result<String, String> {
    let m = &cfg.metadata;
    let base = match (&m.url, &m.url_env) {
        (Some(url), None) => {
            let has_password = wharf_storage::meta::url_has_password(url).map_err(|e| {
                format!("metadata.url {url:?} does not parse as a postgres URL: {e}")
            })?;
            if has_password {
                return Err("metadata.url holds a password: take it out and put it in \
                            metadata.password_env or metadata.password_file (the config file is \
                            not a place for secrets)"
                    .into());
            }
            url.clone()
        }
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => return Ok(v.trim().to_owned()),
            _ => {
                return Err(format!(
                    "metadata.url_env names the environment variable {var}, which is not set: set \
                     it to postgres://user:password@host:port/db"
                ))
            }
        },
        (Some(_), Some(_)) => {
            return Err("metadata: set one of url and url_env, not both".into());
        }
        (None, None) => {
            return Err(
                "metadata.backend is \"postgres\" but no database is named: set \
                        metadata.url (postgres://user@host:port/db) or metadata.url_env"
                    .into(),
            );
        }
    };
    if m.password_env.is_none() && m.password_file.is_none() {
        // Trust or peer authentication, or a ~/.pgpass the driver does not read: try without.
        return Ok(base);
    }
    let password = secret(
        "metadata",
        "password",
        m.password_env.as_deref(),
        m.password_file.as_deref(),
    )?;
    // Appended as a connection parameter, so no URL escaping of the password is needed.
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}password={}", url_escape(&password)))
}

fn url_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Why the metadata database would not open, and what to do.
pub fn postgres_refusal(e: &MetaError) -> String {
    match e {
        MetaError::Unavailable { endpoint, detail } => format!(
            "cannot reach the metadata database {endpoint}: {detail}; check metadata.url (host, port, \
             database name) and that Postgres is running and accepts connections from here"
        ),
        MetaError::Tls { endpoint, detail } => format!(
            "the TLS handshake with the metadata database {endpoint} failed ({detail}): if its \
             certificate is signed by your own CA, name that CA with sslrootcert=FILE in \
             metadata.url; sslmode=require encrypts without checking the certificate, as psql \
             does by default; sslmode=disable if the server has no TLS"
        ),
        MetaError::Pg(e) => {
            let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
            let pg = wharf_storage::meta::postgres_said(e);
            match code.as_str() {
                "28P01" | "28000" => format!(
                    "the metadata database refused the login ({pg}): check the user in metadata.url \
                     and the password in metadata.password_env / password_file"
                ),
                "3D000" => format!(
                    "the metadata database does not exist ({pg}): create it (createdb) or fix the \
                     database name in metadata.url"
                ),
                "42501" => format!(
                    "the metadata database user may not create wharf's tables ({pg}): grant it CREATE \
                     on the database (GRANT CREATE ON DATABASE ... TO ...), or have an owner run wharf \
                     once"
                ),
                _ => format!("the metadata database failed: {pg}"),
            }
        }
        e => e.to_string(),
    }
}

/// The backends in use, as `wharf status` and the start log name them.
pub fn describe(cfg: &Config) -> (String, String) {
    let content = match cfg.storage.backend {
        StorageBackend::Fs => format!("files in {}", cfg.storage.data_dir.display()),
        StorageBackend::S3 => match &cfg.storage.s3 {
            Some(s3) => format!(
                "s3 {} bucket {}{}",
                s3.endpoint,
                s3.bucket,
                prefix_note(&s3.prefix)
            ),
            None => "s3 (not configured)".into(),
        },
    };
    let meta = match cfg.metadata.backend {
        MetadataBackend::Redb => {
            format!("redb {}", cfg.storage.data_dir.join("meta.redb").display())
        }
        MetadataBackend::Postgres => match (&cfg.metadata.url, &cfg.metadata.url_env) {
            (Some(u), _) => format!("postgres {u}"),
            (None, Some(v)) => format!("postgres (from ${v})"),
            (None, None) => "postgres (not configured)".into(),
        },
    };
    (content, meta)
}

fn prefix_note(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!(" prefix {prefix}")
    }
}

/// Where content and metadata live: `files in <dir>` or `s3 <endpoint> bucket <b>`; `redb <file>` or
/// `postgres <url>` (never a password).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backends {
    pub content: String,
    pub metadata: String,
}

impl Backends {
    pub fn of(cfg: &wharf_model::config::Config) -> Backends {
        let (content, metadata) = describe(cfg);
        Backends { content, metadata }
    }
}
