//! Declarations that must not compile, each with the error a user sees
//! (`tests/ui/*.stderr`, regenerated with `TRYBUILD=overwrite`). The
//! snapshots are made with the stable toolchain named in the README.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
