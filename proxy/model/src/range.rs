//! HTTP byte ranges: `Range` on blob reads (RFC 9110 §14) and `Content-Range` on upload chunks (OCI
//! distribution spec, "Pushing a blob in chunks").

/// A resolved, satisfiable byte range: `start..=end` within a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The outcome of applying a `Range` header to a blob of known length.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable `Range`: serve the whole blob with 200. Multi-range and unknown units land here too; RFC 9110
    /// lets a server ignore a Range it does not support, and clients then get the whole, verifiable blob.
    Full,
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

pub fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if first.is_empty() {
        // suffix range: the last N bytes
        let Some(n) = num(last) else {
            return RangeRequest::Full;
        };
        if n == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        let n = n.min(len);
        return RangeRequest::Partial(ByteRange {
            start: len - n,
            end: len - 1,
        });
    }
    let Some(start) = num(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match num(last) {
            Some(e) if e >= start => e,
            // an invalid range-spec (last < first) makes the whole header ignorable
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(ByteRange {
        start,
        end: end.min(len - 1),
    })
}

/// An upload chunk's `Content-Range`. The spec writes `<start>-<end>`; some clients send the RFC form
/// `bytes <start>-<end>/<total or *>`; accept both.
pub fn parse_content_range(header: &str) -> Option<ByteRange> {
    let s = header.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split_once('/').map_or(s, |(r, _)| r);
    let (a, b) = s.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = b.trim().parse().ok()?;
    (end >= start).then_some(ByteRange { start, end })
}

/// The `Range` header value the spec wants on upload responses: `0-<last byte>`, and `0-0` for nothing yet
/// (what distribution answers, and what clients expect).
pub fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, end: u64) -> RangeRequest {
        RangeRequest::Partial(ByteRange { start, end })
    }

    #[test]
    fn range_forms() {
        assert_eq!(parse_range("bytes=0-9", 100), p(0, 9));
        assert_eq!(parse_range("bytes=10-", 100), p(10, 99));
        assert_eq!(parse_range("bytes=90-200", 100), p(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), p(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), p(0, 99));
        assert_eq!(parse_range("bytes=99-99", 100), p(99, 99));
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=100-200", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeRequest::Unsatisfiable);
    }

    #[test]
    fn ignorable() {
        for h in [
            "",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(h, 100), RangeRequest::Full, "{h:?}");
        }
    }

    #[test]
    fn content_range_forms() {
        let r = ByteRange {
            start: 0,
            end: 1023,
        };
        assert_eq!(parse_content_range("0-1023"), Some(r));
        assert_eq!(parse_content_range("bytes 0-1023/*"), Some(r));
        assert_eq!(parse_content_range("bytes 0-1023/1024"), Some(r));
        assert_eq!(parse_content_range("5-1"), None);
        assert_eq!(parse_content_range("x"), None);
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(1024), "0-1023");
    }
}
