//! object_store's errors in the store's words: what a retry may fix (`Unavailable`: no connection,
//! a timeout, a 5xx) against what it will not (`Refused`: the keys, the bucket), each saying what to
//! do. object_store keeps the S3 error body (`<Code>NoSuchBucket</Code>`, …) only in its messages,
//! so the codes are read from there.

use crate::store::StoreError;

/// Where the store is, for messages.
#[derive(Debug, Clone)]
pub struct Origin {
    pub endpoint: String,
    pub bucket: String,
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// The object is not there (`404 NoSuchKey`).
    NotFound,
    /// The requested range lies outside the object (`416`).
    BadRange,
    Store(StoreError),
}

/// The S3 error code or status in a failure's message.
fn mentions(text: &str, code: &str) -> bool {
    text.contains(code)
}

/// A 4xx in the message ("…status code: 4xx…"): a refusal, not an outage.
fn client_error(text: &str) -> Option<&str> {
    let at = text.find("status code: ")? + "status code: ".len();
    let code = text.get(at..at + 3)?;
    code.starts_with('4').then_some(code)
}

impl Origin {
    pub fn classify(&self, e: object_store::Error) -> Failure {
        self.classify_ref(&e)
    }

    pub fn classify_ref(&self, e: &object_store::Error) -> Failure {
        use object_store::Error as E;
        let text = e.to_string();
        if mentions(&text, "NoSuchBucket") {
            return Failure::Store(self.no_bucket());
        }
        match e {
            E::NotFound { .. } => Failure::NotFound,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                Failure::Store(self.bad_key(&text))
            }
            _ if mentions(&text, "InvalidAccessKeyId")
                || mentions(&text, "SignatureDoesNotMatch")
                || mentions(&text, "AccessDenied") =>
            {
                Failure::Store(self.bad_key(&text))
            }
            _ if client_error(&text) == Some("416") || mentions(&text, "InvalidRange") => {
                Failure::BadRange
            }
            _ if client_error(&text).is_some() => Failure::Store(StoreError::Refused {
                endpoint: self.endpoint.clone(),
                detail: format!("bucket {}: {text}", self.bucket),
            }),
            // No connection, a timeout, a 5xx after the retries: worth a retry later.
            _ => Failure::Store(self.unavailable(text)),
        }
    }

    /// For calls where "not there" is itself an error.
    pub fn store_error(&self, e: object_store::Error, what: &str) -> StoreError {
        match self.classify(e) {
            Failure::Store(e) => e,
            Failure::NotFound => StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{what}: not found in bucket {}", self.bucket),
            )),
            Failure::BadRange => StoreError::InvalidArgument(format!("{what}: range outside it")),
        }
    }

    pub fn unavailable(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Unavailable {
            endpoint: self.endpoint.clone(),
            detail: detail.into(),
        }
    }

    fn no_bucket(&self) -> StoreError {
        let b = &self.bucket;
        StoreError::Refused {
            endpoint: self.endpoint.clone(),
            detail: format!(
                "bucket {b} does not exist: create it (garage bucket create {b}) or fix storage.s3.bucket"
            ),
        }
    }

    fn bad_key(&self, text: &str) -> StoreError {
        tracing::debug!(endpoint = %self.endpoint, error = %text, "object store refused the key");
        StoreError::Refused {
            endpoint: self.endpoint.clone(),
            detail: format!(
                "the access key was refused: check storage.s3.access_key_id_env/_file and \
                 secret_access_key_env/_file (and that the key may read and write bucket {})",
                self.bucket
            ),
        }
    }
}
