use super::*;

fn request(method: &str, path: &str, signature: Option<String>) -> Request<()> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(s) = signature {
        b = b.header(PEER_HEADER, s);
    }
    b.body(()).unwrap()
}

#[test]
fn only_a_fresh_signature_by_the_shared_secret_for_this_request_passes() {
    let a = Cluster::new("a:1".into(), &[7; 32]);
    let other = Cluster::new("x:1".into(), &[8; 32]);
    let path = "/v2/team/app/blobs/uploads/abc?digest=sha256:00";
    let good = a.sign("PUT", path);
    assert_eq!(a.verify(&request("PUT", path, Some(good.clone()))), Ok(()));
    assert_eq!(a.verify(&request("PUT", path, None)), Err("unsigned"));
    assert_eq!(
        a.verify(&request("PATCH", path, Some(good.clone()))),
        Err("bad signature"),
        "the method is signed"
    );
    assert_eq!(
        a.verify(&request(
            "PUT",
            "/v2/team/app/blobs/uploads/other",
            Some(good)
        )),
        Err("bad signature"),
        "the path is signed"
    );
    assert_eq!(
        a.verify(&request("PUT", path, Some(other.sign("PUT", path)))),
        Err("bad signature")
    );
    let (_, tag) = a
        .sign("PUT", path)
        .split_once('.')
        .map(|(t, m)| (t.to_owned(), m.to_owned()))
        .unwrap();
    let old = format!("{}.{tag}", unix_now() - SKEW_SECS - 5);
    assert_eq!(
        a.verify(&request("PUT", path, Some(old))),
        Err("stale signature (or clocks apart)")
    );
    assert_eq!(
        a.verify(&request("PUT", path, Some("nonsense".into()))),
        Err("malformed signature")
    );
}
