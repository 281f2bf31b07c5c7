//! LAN discovery (`[hdhomerun] discovery`): a real SiliconDust discover request and a
//! real SSDP M-SEARCH sent over UDP to freesky on 127.0.0.1, answered with where the
//! tuner is; malformed packets ignored; and nothing bound when discovery is off. With
//! `max_channels` splitting the lineup, every virtual tuner is advertised as a device of
//! its own, and a lineup still loading never holds up an answer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::common::{FakeUpstream, TestApp, HANG_GUARD, M3U_TYPE};
use freesky::discovery::{
    parse_discover_reply, seal_frame, DiscoverReply, DiscoverRequest, ASKER_BURST, ASKER_RATE,
    DEVICE_TYPE_TUNER, TYPE_DISCOVER_REQ, WILDCARD,
};

/// Jellyfin's discover broadcast, byte for byte (see `discovery::tests`).
pub(crate) const JELLYFIN_REQUEST: [u8; 20] = [
    0, 2, 0, 12, 1, 4, 255, 255, 255, 255, 2, 4, 255, 255, 255, 255, 115, 204, 125, 143,
];

/// How long a datagram that should get no answer is waited for. Silence is only
/// asserted after a later request on the same server socket has been answered, so
/// this bounds a race the server has already lost; it is not what the test relies on.
const SILENCE: Duration = Duration::from_millis(300);

pub(crate) struct Ports {
    pub hdhr: u16,
    pub ssdp: u16,
}

/// Two different UDP ports that are free right now on 127.0.0.1.
pub(crate) fn free_udp_ports() -> Ports {
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    let (a, b) = (bind(), bind());
    let port = |s: &std::net::UdpSocket| s.local_addr().expect("local addr").port();
    Ports {
        hdhr: port(&a),
        ssdp: port(&b),
    }
}

pub(crate) async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("bind client")
}

/// Sends `datagram` to `to` until a datagram comes back (UDP may drop one), bounded
/// by HANG_GUARD.
pub(crate) async fn ask(sock: &UdpSocket, to: SocketAddr, datagram: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        sock.send_to(datagram, to).await.expect("send");
        match tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) => {
                assert_eq!(from, to, "answer from the wrong address");
                return buf[..n].to_vec();
            }
            Ok(Err(e)) => panic!("receive from {to}: {e}"),
            Err(_) if tokio::time::Instant::now() < deadline => continue,
            Err(_) => panic!("no answer from {to} within {HANG_GUARD:?}"),
        }
    }
}

/// Every datagram that arrives within SILENCE.
async fn drain(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) = tokio::time::timeout(SILENCE, sock.recv_from(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

async fn app_with_discovery() -> (TestApp, Ports) {
    let ports = free_udp_ports();
    let app = TestApp::spawn(&format!(
        "[hdhomerun]\ntuner_count = 3\ndiscovery = true\ndiscovery_port = {}\nssdp_port = {}\n",
        ports.hdhr, ports.ssdp
    ))
    .await;
    // Once HTTP answers, run() has bound the discovery sockets (it does so first).
    assert_eq!(app.get("/health").await.status(), 200);
    (app, ports)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn discover_request_gets_where_the_tuner_is() {
    let (app, ports) = app_with_discovery().await;
    let (status, d) = app.get_json("/discover.json").await;
    assert_eq!(status, 200, "{d}");
    let id_hex = d["DeviceID"].as_str().expect("DeviceID").to_string();
    let device_id = u32::from_str_radix(&id_hex, 16).expect("hex DeviceID");

    let sock = client().await;
    let reply = ask(&sock, local(ports.hdhr), &JELLYFIN_REQUEST).await;
    // What Jellyfin checks before fetching discover.json.
    assert!(reply.len() > 13 && reply[1] == 3, "{reply:?}");
    let r = parse_discover_reply(&reply).expect("a well-formed reply with a valid CRC");
    assert_eq!(r.device_type, DEVICE_TYPE_TUNER);
    assert_eq!(r.device_id, device_id);
    assert_eq!(r.tuner_count, 3);
    assert_eq!(r.base_url, app.base);
    assert_eq!(r.lineup_url, app.url("/lineup.json"));
    assert_eq!(r.device_auth, d["DeviceAuth"].as_str().unwrap());
    // The URLs handed out work.
    let (status, lineup) = app.get_json(&r.lineup_url).await;
    assert_eq!(status, 200, "{lineup}");

    // libhdhomerun asking for this very device, and for tuners or storage at once.
    for req in [
        DiscoverRequest {
            device_types: vec![DEVICE_TYPE_TUNER],
            device_id: Some(device_id),
        },
        DiscoverRequest {
            device_types: vec![5, DEVICE_TYPE_TUNER],
            device_id: None,
        },
    ] {
        let reply = ask(&sock, local(ports.hdhr), &req.encode().unwrap()).await;
        let r = parse_discover_reply(&reply).expect("reply");
        assert_eq!(r.device_id, device_id, "{req:?}");
    }
}

#[tokio::test]
async fn malformed_or_foreign_requests_get_no_answer_and_the_server_goes_on() {
    let (app, ports) = app_with_discovery().await;
    let (_, d) = app.get_json("/discover.json").await;
    let device_id =
        u32::from_str_radix(d["DeviceID"].as_str().expect("DeviceID"), 16).expect("hex");
    let to = local(ports.hdhr);

    let mut bad_crc = JELLYFIN_REQUEST;
    bad_crc[19] ^= 0xFF;
    let ignored: Vec<Vec<u8>> = vec![
        vec![],
        b"hello".to_vec(),
        JELLYFIN_REQUEST[..10].to_vec(),
        bad_crc.to_vec(),
        // A valid frame whose TLV runs past the payload.
        seal_frame(TYPE_DISCOVER_REQ, &[1, 100, 0]).unwrap(),
        // Well-formed, for another device, or for storage devices only.
        DiscoverRequest {
            device_types: vec![WILDCARD],
            device_id: Some(device_id ^ 0x10),
        }
        .encode()
        .unwrap(),
        DiscoverRequest {
            device_types: vec![5],
            device_id: None,
        }
        .encode()
        .unwrap(),
    ];
    let stranger = client().await;
    for datagram in &ignored {
        stranger.send_to(datagram, to).await.expect("send");
    }
    // The same server socket answers a good request sent after them, so it has already
    // handled (and ignored) the others.
    let asker = client().await;
    let reply = ask(&asker, to, &JELLYFIN_REQUEST).await;
    assert_eq!(parse_discover_reply(&reply).unwrap().device_id, device_id);
    let got = drain(&stranger).await;
    assert!(got.is_empty(), "answered an ignorable packet: {got:?}");

    // The SSDP socket ignores what is not an M-SEARCH for us the same way.
    let to = local(ports.ssdp);
    for datagram in [
        &b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"[..],
        b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\nST: urn:dial-multiscreen-org:service:dial:1\r\n\r\n",
        &[0xFF; 40],
    ] {
        stranger.send_to(datagram, to).await.expect("send");
    }
    let ok = ask(&asker, to, &msearch("upnp:rootdevice")).await;
    assert!(ok.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let got = drain(&stranger).await;
    assert!(
        got.is_empty(),
        "answered an ignorable SSDP message: {got:?}"
    );
}

fn msearch(st: &str) -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: {st}\r\n\r\n"
    )
    .into_bytes()
}

/// The value of header `name` in an SSDP message.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn ssdp_msearch_gets_the_device_description() {
    let (app, ports) = app_with_discovery().await;
    let (_, d) = app.get_json("/discover.json").await;
    let id = d["DeviceID"].as_str().expect("DeviceID").to_string();
    let sock = client().await;

    for st in [
        "upnp:rootdevice",
        "urn:schemas-upnp-org:device:MediaServer:1",
    ] {
        let answer = ask(&sock, local(ports.ssdp), &msearch(st)).await;
        let answer = String::from_utf8(answer).expect("text");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(header(&answer, "ST"), Some(st), "{answer}");
        assert_eq!(
            header(&answer, "USN"),
            Some(format!("uuid:{id}::{st}").as_str()),
            "{answer}"
        );
        assert!(header(&answer, "CACHE-CONTROL").is_some_and(|v| v.starts_with("max-age=")));
        assert!(header(&answer, "SERVER").is_some());
        let location = header(&answer, "LOCATION").expect("LOCATION");
        assert_eq!(location, app.url("/device.xml"));
        // Where it points is the device description, naming the same device.
        let xml = app.get_text_ok(location).await;
        assert!(xml.contains(&format!("<UDN>uuid:{id}</UDN>")), "{xml}");
    }

    // ssdp:all: one answer per advertised target, all with the same LOCATION.
    let first = ask(&sock, local(ports.ssdp), &msearch("ssdp:all")).await;
    let mut answers = vec![first];
    answers.extend(drain(&sock).await);
    let sts: Vec<String> = answers
        .iter()
        .map(|a| {
            let a = String::from_utf8_lossy(a);
            assert_eq!(
                header(&a, "LOCATION"),
                Some(app.url("/device.xml").as_str())
            );
            header(&a, "ST").unwrap_or_default().to_string()
        })
        .collect();
    assert!(sts.contains(&"upnp:rootdevice".to_string()), "{sts:?}");
    assert!(sts.contains(&format!("uuid:{id}")), "{sts:?}");
}

#[tokio::test]
async fn discovery_is_off_by_default() {
    let ports = free_udp_ports();
    // The ports are configured, discovery is not switched on.
    let app = TestApp::spawn(&format!(
        "[hdhomerun]\ndiscovery_port = {}\nssdp_port = {}\n",
        ports.hdhr, ports.ssdp
    ))
    .await;
    assert_eq!(app.get("/health").await.status(), 200);
    let (status, _) = app.get_json("/discover.json").await;
    assert_eq!(status, 200, "the HTTP tuner endpoints stay on");

    let sock = client().await;
    sock.send_to(&JELLYFIN_REQUEST, local(ports.hdhr))
        .await
        .expect("send");
    sock.send_to(&msearch("ssdp:all"), local(ports.ssdp))
        .await
        .expect("send");
    let got = drain(&sock).await;
    assert!(got.is_empty(), "discovery answered while off: {got:?}");
    // Nothing holds the ports: binding them without SO_REUSEADDR works.
    for port in [ports.hdhr, ports.ssdp] {
        std::net::UdpSocket::bind(local(port))
            .unwrap_or_else(|e| panic!("port {port} is held with discovery off: {e}"));
    }
}

// ---------------------------------------------------------------------------------------
// virtual tuners

/// Five channels in three groups (A 2, B 2, C 1) from an M3U upstream, split at two
/// channels a tuner: three virtual tuners, with discovery on.
async fn app_with_virtual_tuners(upstream: &FakeUpstream, timeout: &str) -> (TestApp, Ports) {
    let ports = free_udp_ports();
    let app = TestApp::spawn(&format!(
        r#"
[hdhomerun]
tuner_count = 2
max_channels = 2
discovery = true
discovery_port = {}
ssdp_port = {}

[[services]]
name = "P"
kind = "m3u"
url = "{}/list.m3u"
timeout = "{timeout}"
"#,
        ports.hdhr,
        ports.ssdp,
        upstream.base()
    ))
    .await;
    assert_eq!(app.get("/health").await.status(), 200);
    (app, ports)
}

async fn split_upstream() -> FakeUpstream {
    let mut m3u = String::from("#EXTM3U\n");
    for (group, name) in [
        ("A", "A1"),
        ("A", "A2"),
        ("B", "B1"),
        ("B", "B2"),
        ("C", "C1"),
    ] {
        m3u.push_str(&format!(
            "#EXTINF:-1 group-title=\"{group}\",{name}\nhttp://127.0.0.1:9/{name}.m3u8\n"
        ));
    }
    FakeUpstream::bind()
        .await
        .text("/list.m3u", M3U_TYPE, m3u)
        .start()
}

/// The devices as the HTTP API tells them: (DeviceID, base URL), the whole tuner first.
async fn devices_over_http(app: &TestApp) -> Vec<(u32, String)> {
    let hex =
        |v: &serde_json::Value| u32::from_str_radix(v.as_str().expect("id"), 16).expect("hex");
    let (status, d) = app.get_json("/discover.json").await;
    assert_eq!(status, 200, "{d}");
    let mut all = vec![(hex(&d["DeviceID"]), app.base.clone())];
    let (status, list) = app.get_json("/api/tuners").await;
    assert_eq!(status, 200, "{list}");
    for t in list.as_array().expect("a list") {
        all.push((
            hex(&t["device_id"]),
            t["url"].as_str().expect("url").to_string(),
        ));
    }
    all
}

/// Every reply to one `request`, asked again (UDP may drop one, and the virtual tuners
/// are worked out after the lineup loads) until there are `want` of them, bounded by
/// HANG_GUARD.
async fn replies(
    sock: &UdpSocket,
    to: SocketAddr,
    request: &[u8],
    want: usize,
) -> Vec<DiscoverReply> {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let first = ask(sock, to, request).await;
        let mut got = vec![first];
        got.extend(drain(sock).await);
        let got: Vec<DiscoverReply> = got
            .iter()
            .map(|r| parse_discover_reply(r).expect("a well-formed reply"))
            .collect();
        if got.len() >= want || tokio::time::Instant::now() > deadline {
            return got;
        }
    }
}

#[tokio::test]
async fn every_virtual_tuner_answers_discover_as_a_device_of_its_own() {
    let upstream = split_upstream().await;
    let (app, ports) = app_with_virtual_tuners(&upstream, "10s").await;
    let devices = devices_over_http(&app).await;
    assert_eq!(
        devices.len(),
        4,
        "the tuner and three virtual tuners: {devices:?}"
    );
    let sock = client().await;
    let to = local(ports.hdhr);

    // The wildcard: one reply per device, each where that device is served.
    let got = replies(&sock, to, &JELLYFIN_REQUEST, devices.len()).await;
    let got_set: BTreeSet<(u32, String, String)> = got
        .iter()
        .map(|r| (r.device_id, r.base_url.clone(), r.lineup_url.clone()))
        .collect();
    let want: BTreeSet<(u32, String, String)> = devices
        .iter()
        .map(|(id, base)| (*id, base.clone(), format!("{base}/lineup.json")))
        .collect();
    assert_eq!(got.len(), devices.len(), "{got:#?}");
    assert_eq!(got_set, want);
    assert_eq!(
        devices[1].1,
        app.url("/tuners/1"),
        "virtual tuner 1 is served under /tuners/1"
    );
    for r in &got {
        assert_eq!(
            (r.device_type, r.tuner_count),
            (DEVICE_TYPE_TUNER, 2),
            "{r:?}"
        );
        // Each base URL is that very device.
        let (status, d) = app.get_json(&format!("{}/discover.json", r.base_url)).await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["DeviceID"], format!("{:08X}", r.device_id));
        assert_eq!(d["LineupURL"], r.lineup_url.as_str());
        assert_eq!(d["DeviceAuth"], r.device_auth.as_str());
    }

    // A request naming one device gets that one only: a virtual tuner, then the tuner.
    for (id, base) in [&devices[2], &devices[0]] {
        let req = DiscoverRequest {
            device_types: vec![DEVICE_TYPE_TUNER],
            device_id: Some(*id),
        };
        let got = replies(&sock, to, &req.encode().unwrap(), 1).await;
        let got: Vec<(u32, &str)> = got
            .iter()
            .map(|r| (r.device_id, r.base_url.as_str()))
            .collect();
        assert_eq!(got, [(*id, base.as_str())]);
    }
}

#[tokio::test]
async fn ssdp_msearch_gets_a_location_per_virtual_tuner() {
    let upstream = split_upstream().await;
    let (app, ports) = app_with_virtual_tuners(&upstream, "10s").await;
    let devices = devices_over_http(&app).await;
    let sock = client().await;
    let to = local(ports.ssdp);

    let want: BTreeSet<(String, String)> = devices
        .iter()
        .map(|(id, base)| {
            (
                format!("uuid:{id:08X}::upnp:rootdevice"),
                format!("{base}/device.xml"),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let got = loop {
        let mut answers = vec![ask(&sock, to, &msearch("upnp:rootdevice")).await];
        answers.extend(drain(&sock).await);
        let got: BTreeSet<(String, String)> = answers
            .iter()
            .map(|a| {
                let a = String::from_utf8_lossy(a);
                assert_eq!(header(&a, "ST"), Some("upnp:rootdevice"), "{a}");
                let usn = header(&a, "USN").expect("USN").to_string();
                (usn, header(&a, "LOCATION").expect("LOCATION").to_string())
            })
            .collect();
        if got.len() >= want.len() || tokio::time::Instant::now() > deadline {
            break got;
        }
    };
    assert_eq!(got, want);
    // Each LOCATION describes the device its USN names.
    for (usn, location) in &got {
        let uuid = usn.split("::").next().unwrap();
        let xml = app.get_text_ok(location).await;
        assert!(
            xml.contains(&format!("<UDN>{uuid}</UDN>")),
            "{location}: {xml}"
        );
    }

    // A search for one virtual tuner's uuid: that one only.
    let (id, base) = &devices[3];
    let mut answers = vec![ask(&sock, to, &msearch(&format!("uuid:{id:08X}"))).await];
    answers.extend(drain(&sock).await);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = String::from_utf8_lossy(&answers[0]);
    assert_eq!(
        header(&a, "LOCATION"),
        Some(format!("{base}/device.xml").as_str())
    );
}

#[tokio::test]
async fn a_lineup_still_loading_holds_up_no_answer() {
    // The channel list never comes (for a minute): the lineup is not loaded.
    let upstream = FakeUpstream::bind().await.hang("/list.m3u").start();
    let (app, ports) = app_with_virtual_tuners(&upstream, "60s").await;
    // The lineup load has asked the upstream: it is under way, and stays so.
    crate::common::eventually_true("the lineup load to ask the upstream", || async {
        upstream.hits("/list.m3u") > 0
    })
    .await;
    let (_, d) = app.get_json("/discover.json").await;
    let main = u32::from_str_radix(d["DeviceID"].as_str().expect("DeviceID"), 16).expect("hex");

    let sock = client().await;
    let reply = ask(&sock, local(ports.hdhr), &JELLYFIN_REQUEST).await;
    let more = drain(&sock).await;
    let r = parse_discover_reply(&reply).expect("reply");
    assert_eq!(
        (r.device_id, r.base_url.as_str()),
        (main, app.base.as_str())
    );
    assert!(
        more.is_empty(),
        "only the tuner until the lineup is in: {more:?}"
    );
}

// ---------------------------------------------------------------------------------------
// who gets an answer

#[tokio::test]
async fn a_flood_from_one_asker_gets_its_burst_and_rate_only() {
    let (_app, ports) = app_with_discovery().await;
    for (what, port, request) in [
        ("HDHomeRun discover", ports.hdhr, JELLYFIN_REQUEST.to_vec()),
        ("SSDP", ports.ssdp, msearch("upnp:rootdevice")),
    ] {
        let to = local(port);
        let flooder = client().await;
        let started = Instant::now();
        for _ in 0..FLOOD {
            flooder.send_to(&request, to).await.expect("send");
        }
        let got = drain(&flooder).await;
        // Each of these requests is answered with one datagram (no virtual tuners);
        // the bucket refills while the flood and the drain last.
        let refilled = (f64::from(ASKER_RATE) * started.elapsed().as_secs_f64()).ceil() as usize;
        let most = ASKER_BURST as usize + refilled;
        assert!(
            !got.is_empty() && got.len() <= most,
            "{what}: {} answers to {FLOOD} requests, at most {most} allowed",
            got.len()
        );
        // Another asker on this host has a bucket of its own: answered at once.
        let other = UdpSocket::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let answer = ask(&other, to, &request).await;
        assert!(!answer.is_empty(), "{what}");
    }
}

/// Requests a flooding asker sends in a row.
const FLOOD: usize = 100;
