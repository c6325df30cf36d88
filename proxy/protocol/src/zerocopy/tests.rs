use std::io::Write as _;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::body::{map_chunk, map_if_resident, Body, Sending, MAP_CHUNK};
use wharf_storage::store::{Blob, BlobSource};

fn file_with(data: &[u8]) -> Arc<File> {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    Arc::new(f)
}

#[test]
fn finds_the_file_behind_any_slice_of_a_live_mapping_only() {
    let data: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 253) as u8).collect();
    let file = file_with(&data);
    let chunk = map_chunk(&file, 5000, 6000, Sending::Zerocopy).unwrap();
    let (_, off) = lookup(&chunk).expect("a registered mapping");
    assert_eq!(off, 5000);
    let (_, off) = lookup(&chunk.slice(100..200)).expect("inside the mapping");
    assert_eq!(off, 5100);
    assert!(
        lookup(&data[..]).is_none(),
        "ordinary memory is not a mapping"
    );
    let addr = chunk.as_ptr() as usize;
    drop(chunk);
    assert!(
        !MAPPINGS.read().unwrap().contains_key(&addr),
        "a dropped mapping is unregistered"
    );
    let copied = map_if_resident(&file, 0, 4096, Sending::Copy)
        .unwrap()
        .expect("just written, so in the page cache");
    assert!(
        lookup(&copied).is_none(),
        "a chunk to copy is not sent with sendfile"
    );
}

/// A blob body served by hyper over a real loopback connection goes out with `sendfile` and arrives
/// byte for byte, range and all, with the response head written normally before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_bodies_go_out_with_sendfile_and_arrive_intact() {
    let data: Vec<u8> = (0..(3 * MAP_CHUNK as usize + 123))
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let file = file_with(&data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = data.len() as u64;
    let (start, end) = (10u64, n - 2); // a range: offsets that are not page-aligned
    let served = file.clone();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let svc = service_fn(move |_req| {
            let body = Body::blob_sent(
                Blob {
                    size: n,
                    range: wharf_model::range::ByteRange { start, end },
                    source: BlobSource::File(served.clone()),
                },
                Some(Sending::Zerocopy),
            );
            async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(body)) }
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(Stream::new(sock)), svc)
            .await
            .unwrap();
    });
    let before = wharf_metrics::sendfile_bytes();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    server.await.unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let want = &data[start as usize..=end as usize];
    assert!(
        head.contains(&format!("content-length: {}", want.len())),
        "{head}"
    );
    assert!(&got[head_end..] == want, "body differs from the file");
    let sent = wharf_metrics::sendfile_bytes() - before;
    assert!(
        sent >= want.len() as u64,
        "only {sent} of {} body bytes went out with sendfile",
        want.len()
    );
}

/// Off a socket (a test collecting the body, say) the same chunks are plain memory with the same bytes.
#[tokio::test]
async fn mapped_chunks_read_as_ordinary_bytes_elsewhere() {
    let data = vec![42u8; 2 * MAP_CHUNK as usize];
    let file = file_with(&data);
    let body = Body::blob(Blob {
        size: data.len() as u64,
        range: wharf_model::range::ByteRange {
            start: 0,
            end: data.len() as u64 - 1,
        },
        source: BlobSource::File(file),
    });
    assert_eq!(body.collect().await.unwrap().to_bytes(), &data[..]);
}
