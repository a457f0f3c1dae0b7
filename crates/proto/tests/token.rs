//! Tokens and proofs.

use std::path::Path;
use std::process::Command;

use metasched_proto::{
    NONCE_LEN, ProtoError, TOKEN_ENV, Token, coordinator_proof, nonce, verify_coordinator_proof,
    verify_worker_proof, worker_proof,
};

fn temp_file(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("metasched-proto-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

#[test]
fn debug_never_prints_the_secret() {
    let t = Token::new("super-secret-value").expect("token");
    assert_eq!(format!("{t:?}"), "Token(..)");
    assert_eq!(format!("{:?}", Some(&t)), "Some(Token(..))");
    assert_eq!(format!("{:#?}", Token::random()), "Token(..)");
}

#[test]
fn a_token_file_is_read_without_its_trailing_newline() {
    let p = temp_file("nl", b"abc def\n");
    assert_eq!(Token::from_file(&p).expect("token").expose(), "abc def");
    let p = temp_file("crlf", b"abc\r\n");
    assert_eq!(Token::from_file(&p).expect("token").expose(), "abc");
    let p = temp_file("plain", b"xyz");
    assert_eq!(Token::from_file(&p).expect("token").expose(), "xyz");
}

#[test]
fn empty_or_missing_token_files_are_refused() {
    for contents in [&b""[..], b"\n", b"\r\n\n"] {
        let p = temp_file("empty", contents);
        let err = Token::from_file(&p).expect_err("empty token");
        assert!(matches!(&err, ProtoError::BadToken(m) if m.contains("empty")), "{err}");
    }
    let err = Token::from_file(Path::new("/nonexistent/metasched/token")).expect_err("missing");
    assert!(matches!(&err, ProtoError::BadToken(m) if m.contains("/nonexistent/metasched/token")), "{err}");
    assert!(matches!(Token::new(""), Err(ProtoError::BadToken(_))));
    let p = temp_file("binary", b"\xff\xfe\n");
    let err = Token::from_file(&p).expect_err("not text");
    assert!(matches!(&err, ProtoError::BadToken(m) if m.contains("UTF-8")), "{err}");
}

#[test]
fn the_file_wins_over_the_environment() {
    let p = temp_file("wins", b"from-the-file\n");
    let t = Token::resolve(Some(&p)).expect("resolve").expect("some");
    assert_eq!(t.expose(), "from-the-file");
}

#[test]
fn random_tokens_are_64_hex_characters_and_distinct() {
    let a = Token::random();
    let b = Token::random();
    let s = a.expose();
    assert_eq!(s.len(), 64);
    assert!(s.bytes().all(|c| c.is_ascii_hexdigit()), "{s}");
    assert_ne!(a.expose(), b.expose());
    assert_ne!(nonce(), nonce());
}

#[test]
fn proofs_depend_on_the_token_the_nonces_and_the_role() {
    let t = Token::new("k").expect("token");
    let (nw, nc) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
    let cp = coordinator_proof(&t, &nw, &nc);
    let wp = worker_proof(&t, &nw, &nc);
    assert_ne!(cp, wp, "the labels separate the roles");
    assert!(verify_coordinator_proof(&t, &nw, &nc, &cp));
    assert!(verify_worker_proof(&t, &nw, &nc, &wp));
    assert!(!verify_worker_proof(&t, &nw, &nc, &cp), "no reflection");
    assert!(!verify_coordinator_proof(&t, &nw, &nc, &wp), "no reflection");
    assert!(!verify_coordinator_proof(&t, &nc, &nw, &cp), "nonces are ordered");
    assert!(!verify_coordinator_proof(&Token::new("K").expect("token"), &nw, &nc, &cp));
    assert!(!verify_coordinator_proof(&t, &nw, &nc, &cp[..31]), "a short proof fails");
    assert!(!verify_coordinator_proof(&t, &nw, &nc, &[]), "an empty proof fails");
}

#[test]
fn proofs_are_hmac_sha256_of_label_and_nonces() {
    // Values computed independently, with Python's `hmac`:
    // hmac.new(b"key", b"metasched/v1/coordinator" + bytes(32) + b"\x01" * 32, sha256), and
    // the same with b"metasched/v1/worker".
    let t = Token::new("key").expect("token");
    let proof = coordinator_proof(&t, &[0; NONCE_LEN], &[1; NONCE_LEN]);
    assert_eq!(hex::encode(proof), EXPECTED_COORDINATOR_PROOF);
    let proof = worker_proof(&t, &[0; NONCE_LEN], &[1; NONCE_LEN]);
    assert_eq!(hex::encode(proof), EXPECTED_WORKER_PROOF);
}

const EXPECTED_COORDINATOR_PROOF: &str = "926c85288e4886aea56f550e87f93fe00b6d8a45bd8792fa95b615ed4d78a5e4";
const EXPECTED_WORKER_PROOF: &str = "590ec4d02bcf426ee84d56a6b18bf88cd52534a0efd7ebb2fef05e9ba9b1e06d";

/// Reads the token from the environment: run in a child process of this test binary so that
/// no test sets a variable of the shared process environment.
#[test]
fn the_environment_variable_is_read() {
    let exe = std::env::current_exe().expect("test binary");
    let run = |value: &str| {
        Command::new(&exe)
            .args(["--exact", "env_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(TOKEN_ENV, value)
            .env("METASCHED_PROTO_ENV_CHILD", "1")
            .output()
            .expect("spawn")
    };
    let out = run("from-the-env\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("CHILD-TOKEN=from-the-env;"), "{stdout}");
    let out = run("");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHILD-ERROR=bad token: METASCHED_TOKEN is set but empty"), "{stdout}");
}

#[test]
#[ignore = "run by the_environment_variable_is_read in a child process"]
fn env_child() {
    if std::env::var_os("METASCHED_PROTO_ENV_CHILD").is_none() {
        return;
    }
    match Token::resolve(None) {
        Ok(Some(t)) => println!("CHILD-TOKEN={};", t.expose()),
        Ok(None) => println!("CHILD-NONE"),
        Err(e) => println!("CHILD-ERROR={e}"),
    }
}
