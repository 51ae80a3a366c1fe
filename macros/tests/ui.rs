//! Compile-fail cases of `dynamic_net!`, pinned with trybuild: each error
//! is a `compile_error!` on the path literal or the option at fault.

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
