//! The command surface packagers rely on: help, man page, completions, exit codes.

use crate::util::Root;

#[test]
fn help_documents_exit_codes_and_restarts() {
    let root = Root::new(&["s6"], "");
    let out = root.svsettle(&["--help"]);
    out.ok().stdout_has("3  deferred");
    let out = root.svsettle(&["reconcile", "--help"]);
    out.ok().stdout_has("started once").stdout_has("--dry-run");
}

#[test]
fn man_page_and_completions_come_from_the_definitions() {
    let root = Root::new(&["s6"], "");
    let man = root.svsettle(&["generate", "man"]);
    man.ok()
        .stdout_has(".SH \"EXIT STATUS\"")
        .stdout_has("SVSETTLE RECONCILE")
        .stdout_has("\\-\\-keep\\-live");
    root.svsettle(&["generate", "bash"])
        .ok()
        .stdout_has("svsettle");
}

#[test]
fn usage_errors_exit_2() {
    let root = Root::new(&["s6"], "");
    root.svsettle(&["reconcile", "--all", "--pending"]).code(2);
    root.svsettle(&["resolve", "foo"]).code(2);
    root.svsettle(&["no-such-command"]).code(2);
    root.write(
        "/etc/svsettle.toml",
        "[domain.s6]\nrestart = \"sometimes\"\n",
    );
    root.svsettle(&["status"]).code(2).stderr_has("restart");
}
