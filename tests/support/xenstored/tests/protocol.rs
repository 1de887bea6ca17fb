//! The daemon driven over its socket with a raw client: each test checks one
//! part of xenstored's behaviour (tools/xenstored/core.c and friends).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use test_xenstored::{Daemon, Fault, FaultAction, Request};

const SHORT: Duration = Duration::from_millis(200);

fn daemon(name: &str) -> Daemon {
    Daemon::start(&scratch(name).join("socket")).unwrap()
}

fn request(op: &str, path: &str, value: Option<&str>) -> Request {
    Request {
        op: op.into(),
        path: path.into(),
        value: value.map(Into::into),
    }
}

#[test]
fn initial_tree() {
    let d = daemon("initial");
    let mut c = Client::connect(d.socket());
    assert_eq!(c.dir("/").unwrap(), ["local", "tool"]);
    assert_eq!(c.dir("/local/domain").unwrap(), ["0"]);
    assert_eq!(c.dir("/local/domain/0").unwrap(), Vec::<String>::new());
    assert_eq!(c.read("/tool").unwrap(), "");
    assert_eq!(c.get_perms("/").unwrap(), ["n0"]);
    let all: Vec<String> = d.dump().into_keys().collect();
    assert_eq!(
        all,
        ["/", "/local", "/local/domain", "/local/domain/0", "/tool"]
    );
}

#[test]
fn write_read_directory_and_reply_payloads() {
    let d = daemon("basic");
    let mut c = Client::connect(d.socket());
    // WRITE, MKDIR and RM answer "OK\0"; READ answers the bare value.
    let mut payload = nul("/a/b/c");
    payload.extend_from_slice(b"hello world");
    assert_eq!(c.op(WRITE, 0, &payload).unwrap(), b"OK\0");
    assert_eq!(c.op(READ, 0, &nul("/a/b/c")).unwrap(), b"hello world");
    // Parents are created empty.
    assert_eq!(c.op(READ, 0, &nul("/a/b")).unwrap(), b"");
    c.write("/a/b/d", "").unwrap();
    c.write("/a/b/a", "x").unwrap();
    // DIRECTORY: NUL-terminated names, in creation order.
    assert_eq!(c.op(DIRECTORY, 0, &nul("/a/b")).unwrap(), b"c\0d\0a\0");
    assert_eq!(c.op(MKDIR, 0, &nul("/m/n")).unwrap(), b"OK\0");
    assert_eq!(c.read("/m/n").unwrap(), "");
    // MKDIR of an existing node leaves its value alone.
    c.mkdir("/a/b/c").unwrap();
    assert_eq!(c.read("/a/b/c").unwrap(), "hello world");
    // Overwrite keeps children.
    c.write("/a/b", "v").unwrap();
    assert_eq!(c.dir("/a/b").unwrap(), ["c", "d", "a"]);
    // Values are bytes: NULs survive.
    let mut payload = nul("/bin");
    payload.extend_from_slice(b"x\0y");
    c.op(WRITE, 0, &payload).unwrap();
    assert_eq!(c.op(READ, 0, &nul("/bin")).unwrap(), b"x\0y");
    assert_eq!(c.read("/missing"), Err("ENOENT".into()));
    assert_eq!(c.dir("/missing"), Err("ENOENT".into()));
}

#[test]
fn relative_paths_resolve_under_domain_0() {
    let d = daemon("relative");
    let mut c = Client::connect(d.socket());
    c.write("backend/vif/5/0/state", "4").unwrap();
    assert_eq!(
        d.read("/local/domain/0/backend/vif/5/0/state").unwrap(),
        "4"
    );
    assert_eq!(
        c.read("/local/domain/0/backend/vif/5/0/state").unwrap(),
        "4"
    );
    assert_eq!(c.dir("backend/vif").unwrap(), ["5"]);
    c.rm("backend").unwrap();
    assert_eq!(d.read("/local/domain/0/backend"), None);
    assert_eq!(
        d.traffic()[0],
        request("WRITE", "/local/domain/0/backend/vif/5/0/state", Some("4"))
    );
}

#[test]
fn invalid_paths_and_payloads_are_einval() {
    let d = daemon("einval");
    let mut c = Client::connect(d.socket());
    for bad in ["/a//b", "/a/", "/a b", "/a.b", "/ä", "", "@introduceDomain"] {
        assert_eq!(c.read(bad), Err("EINVAL".into()), "{bad:?}");
        assert_eq!(c.write(bad, "x"), Err("EINVAL".into()), "{bad:?}");
    }
    // Allowed characters: alnum and -/_@.
    c.write("/a-b_c@d/E9", "ok").unwrap();
    // Path length is bounded below /local/domain/N/ (XENSTORE_REL_PATH_MAX).
    let long = format!("/local/domain/0/{}", "x".repeat(2048));
    c.write(&long, "").unwrap();
    let too_long = format!("/local/domain/0/{}", "x".repeat(2049));
    assert_eq!(c.write(&too_long, ""), Err("EINVAL".into()));
    // One-argument requests need exactly one NUL, at the end.
    assert_eq!(c.op(READ, 0, b"/tool"), Err("EINVAL".into()));
    assert_eq!(c.op(READ, 0, b"/tool\0\0"), Err("EINVAL".into()));
    assert_eq!(c.op(READ, 0, b""), Err("EINVAL".into()));
    // WRITE needs the NUL after the path.
    assert_eq!(c.op(WRITE, 0, b"/tool"), Err("EINVAL".into()));
}

#[test]
fn unknown_types_are_enosys_and_oversized_requests_close() {
    let d = daemon("unknown");
    let mut c = Client::connect(d.socket());
    // xenstored answers ENOSYS to types it has no handler for.
    for ty in [20, 23, 99, WATCH_EVENT, ERROR] {
        assert_eq!(c.op(ty, 0, b"/\0"), Err("ENOSYS".into()), "type {ty}");
    }
    // A header announcing more than 4096 bytes: the daemon drops the client.
    c.send_raw(READ, 7, 0, 4097, b"");
    assert_eq!(c.recv().unwrap(), None);
    // Exactly 4096 is fine.
    let mut c = Client::connect(d.socket());
    let mut payload = nul("/big");
    payload.resize(4096, b'v');
    c.op(WRITE, 0, &payload).unwrap();
    assert_eq!(d.read("/big").unwrap().len(), 4096 - 5);
}

#[test]
fn rm_semantics() {
    let d = daemon("rm");
    let mut c = Client::connect(d.socket());
    c.write("/a/b/c/d", "1").unwrap();
    c.write("/a/b/e", "2").unwrap();
    c.write("/a/f", "3").unwrap();
    c.rm("/a/b").unwrap();
    assert_eq!(c.dir("/a").unwrap(), ["f"]);
    assert_eq!(c.read("/a/b/c/d"), Err("ENOENT".into()));
    assert_eq!(d.dump_under("/a").len(), 2);
    // Missing node with an existing parent: success.
    c.rm("/a/nothere").unwrap();
    // Missing parent: ENOENT.
    assert_eq!(c.rm("/nothere/x"), Err("ENOENT".into()));
    // The root cannot go.
    assert_eq!(c.rm("/"), Err("EINVAL".into()));
    assert_eq!(c.rm("/a//b"), Err("EINVAL".into()));
}

#[test]
fn permissions_are_stored_and_inherited() {
    let d = daemon("perms");
    let mut c = Client::connect(d.socket());
    c.write("/vm/5/x", "1").unwrap();
    assert_eq!(c.get_perms("/vm/5/x").unwrap(), ["n0"]);
    // GET_PERMS payload: NUL-terminated perm strings.
    c.set_perms("/vm/5", &["n0", "r5"]).unwrap();
    assert_eq!(c.op(GET_PERMS, 0, &nul("/vm/5")).unwrap(), b"n0\0r5\0");
    // New nodes inherit their parent's permissions.
    c.write("/vm/5/y/z", "1").unwrap();
    assert_eq!(c.get_perms("/vm/5/y").unwrap(), ["n0", "r5"]);
    assert_eq!(c.get_perms("/vm/5/y/z").unwrap(), ["n0", "r5"]);
    // Existing children keep theirs.
    assert_eq!(c.get_perms("/vm/5/x").unwrap(), ["n0"]);
    // strtol base 0, as xenstore_strings_to_perms.
    c.set_perms("/vm/5/x", &["b0x10", "w7"]).unwrap();
    assert_eq!(c.get_perms("/vm/5/x").unwrap(), ["b16", "w7"]);
    assert_eq!(c.set_perms("/vm/5/x", &["x5"]), Err("EINVAL".into()));
    assert_eq!(c.set_perms("/vm/5/x", &["r"]), Err("EINVAL".into()));
    assert_eq!(c.set_perms("/vm/5/x", &["r5z"]), Err("EINVAL".into()));
    assert_eq!(c.set_perms("/vm/5/x", &[]), Err("EINVAL".into()));
    assert_eq!(c.set_perms("/nothere", &["n0"]), Err("ENOENT".into()));
    assert_eq!(c.get_perms("/nothere"), Err("ENOENT".into()));
    // Special nodes have permissions too.
    assert_eq!(c.get_perms("@releaseDomain").unwrap(), ["n0"]);
    // The direct API sees the same.
    assert_eq!(d.get_perms("/vm/5").unwrap(), ["n0", "r5"]);
    d.set_perms("/vm/5", &["n0", "b3"]);
    assert_eq!(c.get_perms("/vm/5").unwrap(), ["n0", "b3"]);
    assert_eq!(d.get_perms("/nothere"), None);
}

#[test]
fn transactions_are_isolated_until_commit() {
    let d = daemon("tx");
    let mut c = Client::connect(d.socket());
    let mut other = Client::connect(d.socket());
    c.write("/t/keep", "old").unwrap();
    let tx = c.tx_start();
    c.write_in(tx, "/t/new/deep", "1").unwrap();
    c.write_in(tx, "/t/keep", "new").unwrap();
    // Inside: the transaction's view.
    assert_eq!(c.read_in(tx, "/t/keep").unwrap(), "new");
    assert_eq!(c.dir_in(tx, "/t").unwrap(), ["keep", "new"]);
    // Outside: nothing yet.
    assert_eq!(other.read("/t/keep").unwrap(), "old");
    assert_eq!(other.read("/t/new"), Err("ENOENT".into()));
    assert_eq!(d.read("/t/new"), None);
    c.tx_end(tx, true).unwrap();
    assert_eq!(other.read("/t/keep").unwrap(), "new");
    assert_eq!(other.read("/t/new/deep").unwrap(), "1");

    // "F" discards.
    let tx = c.tx_start();
    c.rm_in(tx, "/t/new").unwrap();
    assert_eq!(c.read_in(tx, "/t/new/deep"), Err("ENOENT".into()));
    assert_eq!(c.read("/t/new/deep").unwrap(), "1");
    c.tx_end(tx, false).unwrap();
    assert_eq!(c.read("/t/new/deep").unwrap(), "1");

    // The transaction is gone after its end.
    assert_eq!(c.read_in(tx, "/t/keep"), Err("ENOENT".into()));
    assert_eq!(c.tx_end(tx, true), Err("ENOENT".into()));
    // Unknown ids, ending outside a transaction, bad argument, nesting.
    assert_eq!(c.read_in(999, "/t/keep"), Err("ENOENT".into()));
    assert_eq!(c.tx_end(0, true), Err("ENOENT".into()));
    let tx = c.tx_start();
    assert_eq!(c.op(TRANSACTION_END, tx, &nul("X")), Err("EINVAL".into()));
    assert_eq!(c.op(TRANSACTION_START, tx, b"\0"), Err("EBUSY".into()));
    // Transaction ids belong to their connection.
    assert_eq!(other.read_in(tx, "/t/keep"), Err("ENOENT".into()));
    c.tx_end(tx, false).unwrap();
}

#[test]
fn conflicting_commit_is_eagain() {
    let d = daemon("eagain");
    let mut c = Client::connect(d.socket());
    let mut other = Client::connect(d.socket());
    c.write("/c/a", "1").unwrap();

    // Read in the transaction, changed outside: EAGAIN, nothing applied.
    let tx = c.tx_start();
    assert_eq!(c.read_in(tx, "/c/a").unwrap(), "1");
    c.write_in(tx, "/c/b", "from-tx").unwrap();
    other.write("/c/a", "2").unwrap();
    assert_eq!(c.tx_end(tx, true), Err("EAGAIN".into()));
    assert_eq!(c.read("/c/b"), Err("ENOENT".into()));

    // Retry succeeds.
    let tx = c.tx_start();
    assert_eq!(c.read_in(tx, "/c/a").unwrap(), "2");
    c.write_in(tx, "/c/b", "from-tx").unwrap();
    c.tx_end(tx, true).unwrap();
    assert_eq!(c.read("/c/b").unwrap(), "from-tx");

    // A node that was missing when read and created since also conflicts.
    let tx = c.tx_start();
    assert_eq!(c.read_in(tx, "/c/x"), Err("ENOENT".into()));
    d.write("/c/x", "direct");
    assert_eq!(c.tx_end(tx, true), Err("EAGAIN".into()));

    // Unrelated changes do not.
    let tx = c.tx_start();
    c.read_in(tx, "/c/a").unwrap();
    other.write("/elsewhere", "1").unwrap();
    c.tx_end(tx, true).unwrap();
}

#[test]
fn watches_fire_once_then_on_changes() {
    let d = daemon("watch");
    let mut w = Client::connect(d.socket());
    let mut c = Client::connect(d.socket());
    w.watch("/backend", "tok").unwrap();
    // Fires once at once, even for a missing node.
    assert_eq!(w.event(SHORT), Some(("/backend".into(), "tok".into())));
    assert_eq!(w.event(SHORT), None);

    c.write("/backend/vif/1/0/state", "2").unwrap();
    assert_eq!(
        w.events(SHORT),
        [("/backend/vif/1/0/state".into(), "tok".into())]
    );
    // Changes above the watched node do not fire it.
    c.write("/other", "x").unwrap();
    assert_eq!(w.event(SHORT), None);
    // MKDIR of a new node fires, of an existing one does not.
    c.mkdir("/backend/new").unwrap();
    assert_eq!(w.events(SHORT), [("/backend/new".into(), "tok".into())]);
    c.mkdir("/backend/new").unwrap();
    assert_eq!(w.event(SHORT), None);
    // SET_PERMS fires.
    c.set_perms("/backend/new", &["n0", "r1"]).unwrap();
    assert_eq!(w.events(SHORT), [("/backend/new".into(), "tok".into())]);
    // Direct writes from the test fire watches too.
    d.write("/backend/direct", "1");
    assert_eq!(w.events(SHORT), [("/backend/direct".into(), "tok".into())]);

    // RM: every removed node, children first; the removed root also fires
    // watches above it, the nodes below only exact watches.
    w.watch("/backend/vif/1/0/state", "exact").unwrap();
    assert_eq!(w.events(SHORT).len(), 1);
    c.rm("/backend/vif").unwrap();
    assert_eq!(
        w.events(SHORT),
        [
            ("/backend/vif/1/0/state".into(), "exact".into()),
            ("/backend/vif".into(), "tok".into()),
        ]
    );

    // Two watches on one connection, both fire; UNWATCH stops one.
    w.watch("/backend", "tok2").unwrap();
    assert_eq!(w.events(SHORT).len(), 1);
    c.write("/backend/x", "1").unwrap();
    let mut tokens: Vec<String> = w.events(SHORT).into_iter().map(|e| e.1).collect();
    tokens.sort();
    assert_eq!(tokens, ["tok", "tok2"]);
    w.unwatch("/backend", "tok").unwrap();
    c.write("/backend/x", "2").unwrap();
    assert_eq!(w.events(SHORT), [("/backend/x".into(), "tok2".into())]);
    // Errors: duplicate, unknown, malformed.
    assert_eq!(w.watch("/backend", "tok2"), Err("EEXIST".into()));
    assert_eq!(w.unwatch("/backend", "nope"), Err("ENOENT".into()));
    assert_eq!(w.op(WATCH, 0, &nul("/backend")), Err("EINVAL".into()));
    assert_eq!(w.watch("/bad//path", "t"), Err("EINVAL".into()));

    // A closed connection's watches go with it.
    drop(w);
    c.write("/backend/y", "1").unwrap();
}

#[test]
fn relative_and_special_watches() {
    let d = daemon("watch-rel");
    let mut w = Client::connect(d.socket());
    let mut c = Client::connect(d.socket());
    // A relative watch reports relative paths.
    w.watch("device/vif", "rel").unwrap();
    assert_eq!(w.events(SHORT), [("device/vif".into(), "rel".into())]);
    c.write("/local/domain/0/device/vif/0/mtu", "1500").unwrap();
    assert_eq!(w.events(SHORT), [("device/vif/0/mtu".into(), "rel".into())]);

    // Watch on "/" sees everything (but not the special nodes).
    w.watch("/", "root").unwrap();
    assert_eq!(w.events(SHORT), [("/".into(), "root".into())]);
    c.write("/z", "1").unwrap();
    assert_eq!(w.events(SHORT), [("/z".into(), "root".into())]);

    // Special watches fire on domain introduction and release.
    w.watch("@introduceDomain", "intro").unwrap();
    w.watch("@releaseDomain", "release").unwrap();
    assert_eq!(w.events(SHORT).len(), 2);
    assert_eq!(c.op(IS_DOMAIN_INTRODUCED, 0, &nul("7")).unwrap(), b"F\0");
    let mut intro = nul("7");
    intro.extend(nul("1234"));
    intro.extend(nul("9"));
    c.op(INTRODUCE, 0, &intro).unwrap();
    assert_eq!(
        w.events(SHORT),
        [("@introduceDomain".into(), "intro".into())]
    );
    assert_eq!(c.op(IS_DOMAIN_INTRODUCED, 0, &nul("7")).unwrap(), b"T\0");
    assert_eq!(c.op(IS_DOMAIN_INTRODUCED, 0, &nul("0")).unwrap(), b"T\0");
    c.op(RELEASE, 0, &nul("7")).unwrap();
    assert_eq!(
        w.events(SHORT),
        [("@releaseDomain".into(), "release".into())]
    );
    assert_eq!(c.op(RELEASE, 0, &nul("7")), Err("ENOENT".into()));
    assert_eq!(c.op(RELEASE, 0, &nul("0")), Err("EINVAL".into()));

    // RESET_WATCHES drops this connection's watches.
    assert_eq!(w.op(RESET_WATCHES, 0, b"").unwrap(), b"OK\0");
    c.write("/local/domain/0/device/vif/0/mtu", "9000").unwrap();
    assert_eq!(w.event(SHORT), None);
}

#[test]
fn watch_events_from_a_transaction_come_at_commit() {
    let d = daemon("watch-tx");
    let mut w = Client::connect(d.socket());
    let mut c = Client::connect(d.socket());
    w.watch("/t", "t").unwrap();
    assert_eq!(w.events(SHORT).len(), 1);
    let tx = c.tx_start();
    c.write_in(tx, "/t/a", "1").unwrap();
    assert_eq!(w.event(SHORT), None);
    c.tx_end(tx, true).unwrap();
    let events = w.events(SHORT);
    assert!(events.contains(&("/t/a".into(), "t".into())), "{events:?}");
    // Aborted: no events.
    let tx = c.tx_start();
    c.write_in(tx, "/t/b", "1").unwrap();
    c.tx_end(tx, false).unwrap();
    assert_eq!(w.event(SHORT), None);
}

#[test]
fn directory_part_pages_with_generation() {
    let d = daemon("dirpart");
    let mut c = Client::connect(d.socket());
    // 300 names of 20 bytes: more than one 4096-byte reply.
    let names: Vec<String> = (0..300).map(|i| format!("child-{i:014}")).collect();
    let tx = c.tx_start();
    for name in &names {
        c.write_in(tx, &format!("/many/{name}"), "").unwrap();
    }
    c.tx_end(tx, true).unwrap();
    // Plain DIRECTORY does not fit: E2BIG.
    assert_eq!(c.dir("/many"), Err("E2BIG".into()));

    let mut collected = Vec::new();
    let mut generation = None;
    let mut offset = 0;
    loop {
        let mut payload = nul("/many");
        payload.extend(nul(&offset.to_string()));
        let reply = c.op(DIRECTORY_PART, 0, &payload).unwrap();
        assert!(reply.len() <= 4096);
        let gen_end = reply.iter().position(|&b| b == 0).unwrap();
        let this_gen = String::from_utf8(reply[..gen_end].to_vec()).unwrap();
        assert!(this_gen.parse::<u64>().is_ok(), "generation {this_gen:?}");
        assert_eq!(*generation.get_or_insert(this_gen.clone()), this_gen);
        let body = &reply[gen_end + 1..];
        // The last part ends with an empty name (an extra NUL).
        let last = body.ends_with(b"\0\0") || body == b"\0";
        let chunk = split(body);
        offset += chunk.iter().map(|n| n.len() + 1).sum::<usize>();
        collected.extend(chunk.into_iter().filter(|n| !n.is_empty()));
        if last {
            break;
        }
    }
    assert_eq!(collected, names);

    // Offset past the end: generation and an empty list.
    let mut payload = nul("/many");
    payload.extend(nul("100000"));
    let reply = c.op(DIRECTORY_PART, 0, &payload).unwrap();
    assert!(reply.ends_with(b"\0\0"));
    // A change moves the generation on.
    c.write("/many/another", "").unwrap();
    let mut payload = nul("/many");
    payload.extend(nul("0"));
    let after = c.op(DIRECTORY_PART, 0, &payload).unwrap();
    let gen_after = split(&after)[0].clone();
    assert_ne!(Some(gen_after), generation);
    // Exactly two strings, existing node.
    assert_eq!(c.op(DIRECTORY_PART, 0, &nul("/many")), Err("EINVAL".into()));
    let mut payload = nul("/nothere");
    payload.extend(nul("0"));
    assert_eq!(c.op(DIRECTORY_PART, 0, &payload), Err("ENOENT".into()));
}

#[test]
fn domain_path_and_control() {
    let d = daemon("domain");
    let mut c = Client::connect(d.socket());
    assert_eq!(
        c.op(GET_DOMAIN_PATH, 0, &nul("5")).unwrap(),
        b"/local/domain/5\0"
    );
    assert_eq!(c.op(GET_DOMAIN_PATH, 0, b"5"), Err("EINVAL".into()));
    assert_eq!(c.op(0, 0, &nul("check")).unwrap(), b"OK\0");
    assert_eq!(c.op(0, 0, &nul("no-such-command")), Err("EINVAL".into()));
}

#[test]
fn traffic_records_every_request() {
    let d = daemon("traffic");
    let mut c = Client::connect(d.socket());
    c.write("/x", "a b").unwrap();
    c.read("x").unwrap_err();
    let tx = c.tx_start();
    c.dir_in(tx, "/").unwrap();
    c.tx_end(tx, false).unwrap();
    c.rm("/x").unwrap();
    assert_eq!(
        d.traffic(),
        [
            request("WRITE", "/x", Some("a b")),
            request("READ", "/local/domain/0/x", None),
            request("TRANSACTION_START", "", None),
            request("DIRECTORY", "/", None),
            request("TRANSACTION_END", "", None),
            request("RM", "/x", None),
        ]
    );
    d.clear_traffic();
    assert!(d.traffic().is_empty());
    // Direct access is not traffic.
    d.write("/y", "1");
    assert!(d.traffic().is_empty());
}

#[test]
fn fault_error_with_count_and_filters() {
    let d = daemon("fault-error");
    let mut c = Client::connect(d.socket());
    d.inject(Fault {
        op: Some("WRITE".into()),
        path_prefix: "/local/domain/0/backend".into(),
        action: FaultAction::Error("EACCES".into()),
        times: Some(2),
    });
    // Other ops and paths are untouched.
    c.write("/local/domain/0/other", "1").unwrap();
    c.read("/local/domain/0/other").unwrap();
    // Relative paths match after resolution; the write does not happen.
    assert_eq!(c.write("backend/a", "1"), Err("EACCES".into()));
    assert_eq!(
        c.write("/local/domain/0/backend/b", "1"),
        Err("EACCES".into())
    );
    assert_eq!(d.read("/local/domain/0/backend/a"), None);
    // Used up.
    c.write("backend/a", "1").unwrap();
    // The failed requests are still traffic.
    let writes = d.traffic().iter().filter(|r| r.op == "WRITE").count();
    assert_eq!(writes, 4);

    // op None matches any request; errors are sent as given.
    d.inject(Fault {
        op: None,
        path_prefix: String::new(),
        action: FaultAction::Error("EAGAIN".into()),
        times: None,
    });
    assert_eq!(c.read("/tool"), Err("EAGAIN".into()));
    assert_eq!(c.op(TRANSACTION_START, 0, b"\0"), Err("EAGAIN".into()));
    d.clear_faults();
    c.read("/tool").unwrap();
}

#[test]
fn fault_hang_keeps_the_connection() {
    let d = daemon("fault-hang");
    let mut c = Client::connect(d.socket());
    d.inject(Fault {
        op: Some("READ".into()),
        path_prefix: "/slow".into(),
        action: FaultAction::Hang,
        times: Some(1),
    });
    c.send(READ, 0, &nul("/slow"));
    c.set_timeout(Duration::from_millis(300));
    let err = c.recv().unwrap_err();
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    c.set_timeout(Duration::from_secs(5));
    // Still connected and served.
    assert_eq!(c.read("/tool").unwrap(), "");
    assert_eq!(d.traffic()[0], request("READ", "/slow", None));
}

#[test]
fn fault_close_drops_the_connection() {
    let d = daemon("fault-close");
    let mut c = Client::connect(d.socket());
    d.inject(Fault {
        op: Some("RM".into()),
        path_prefix: "/".into(),
        action: FaultAction::Close,
        times: Some(1),
    });
    c.write("/x", "1").unwrap();
    c.send(RM, 0, &nul("/x"));
    assert_eq!(c.recv().unwrap(), None);
    assert_eq!(d.read("/x").unwrap(), "1");
    // New connections work.
    let mut c = Client::connect(d.socket());
    c.rm("/x").unwrap();

    // Replies already due go out before the close (as destroy_conn() flushes).
    d.inject(Fault {
        op: Some("READ".into()),
        path_prefix: "/close".into(),
        action: FaultAction::Close,
        times: None,
    });
    let first = c.send(WRITE, 0, b"/y\0v");
    c.send(READ, 0, &nul("/close"));
    let reply = c.recv().unwrap().unwrap();
    assert_eq!((reply.req_id, reply.payload), (first, b"OK\0".to_vec()));
    assert_eq!(c.recv().unwrap(), None);
}

#[test]
fn direct_access() {
    let d = daemon("direct");
    d.write("/local/domain/0/backend/vif/3/0/mac", "00:16:3e:00:00:01");
    d.write("/local/domain/0/backend/vif/3/0/ip", "10.0.0.2 10.0.0.3");
    assert_eq!(
        d.read("/local/domain/0/backend/vif/3/0/mac").unwrap(),
        "00:16:3e:00:00:01"
    );
    assert_eq!(d.read("/local/domain/0/backend/vif/3").unwrap(), "");
    let expected: BTreeMap<String, String> = [
        ("/local/domain/0/backend/vif/3/0", ""),
        ("/local/domain/0/backend/vif/3/0/ip", "10.0.0.2 10.0.0.3"),
        ("/local/domain/0/backend/vif/3/0/mac", "00:16:3e:00:00:01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(d.dump_under("/local/domain/0/backend/vif/3/0"), expected);
    // dump_under is by path component, not by string prefix.
    d.write("/local/domain/0/backend/vif/30", "");
    assert_eq!(d.dump_under("/local/domain/0/backend/vif/3").len(), 4);
    assert!(d.dump().contains_key("/local/domain/0/backend/vif/30"));
    d.rm("/local/domain/0/backend");
    d.rm("/local/domain/0/backend");
    d.rm("/not/there");
    assert_eq!(d.read("/local/domain/0/backend"), None);
    let mut c = Client::connect(d.socket());
    assert_eq!(c.dir("/local/domain/0").unwrap(), Vec::<String>::new());
}

#[test]
fn drop_stops_the_daemon() {
    let dir = scratch("drop");
    let socket = dir.join("socket");
    let d = Daemon::start(&socket).unwrap();
    let mut c = Client::connect(&socket);
    c.read("/tool").unwrap();
    drop(d);
    assert!(!socket.exists());
    // The open connection is closed too.
    assert_eq!(c.recv().unwrap(), None);
    // A second daemon can take the same path, also over a stale socket file.
    let d = Daemon::start(&socket).unwrap();
    std::mem::forget(Client::connect(&socket));
    drop(d);
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(stale);
    let d = Daemon::start(&socket).unwrap();
    Client::connect(&socket).read("/tool").unwrap();
    drop(d);
}
