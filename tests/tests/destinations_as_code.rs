//! Destinations as code, through the real command line: `destination
//! apply -f` creates, updates and (with `--prune`) removes; applying an
//! exported file changes nothing; a file with bad specs is refused whole,
//! naming each, with nothing written; an operator's pause survives an apply
//! that does not mention it; `destination edit` applies what the editor
//! saved and keeps an edit it cannot apply.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const WRITER: &str = env!("CARGO_BIN_EXE_strata-writer-under-test");

fn writer(dir: &Path, args: &[&str]) -> Output {
    writer_with(dir, args, &[])
}

fn writer_with(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(WRITER);
    cmd.current_dir(dir).args(["--config", "strata.toml"]).args(args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("STRATA_") || k == "VISUAL" || k == "EDITOR") {
        cmd.env_remove(k);
    }
    cmd.envs(envs.iter().copied()).output().unwrap()
}

fn ok(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every spec file of the stage with its bytes.
fn specs(stage: &Path) -> Vec<(String, String)> {
    let dir = stage.join("destinations");
    let mut out: Vec<(String, String)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path().join("spec.json"))
            .filter(|p| p.exists())
            .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

const FILE: &str = r#"
[destination.mirror]
start = "earliest"
on_error = "skip"
[destination.mirror.to]
type = "postgres"
url = "postgres://app:${MIRROR_PASSWORD}@replica:5432/app"
mode = "mirror"

[destination.lake]
stream = "main"
[destination.lake.to]
type = "files"
url = "s3://lake/strata"
format = "parquet"
roll_up_rows = 5000
roll_up_secs = 600

[destination.tail]
start = "latest"
schedule = "every 10m"
[destination.tail.transforms]
include = ["public.*"]
[destination.tail.to]
type = "stdout"
"#;

#[test]
fn apply_export_apply_changes_nothing_and_prune_removes() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    std::fs::write(dir.path().join("strata.toml"), "[stage]\nurl = \"./stage\"\n").unwrap();
    std::fs::write(dir.path().join("destinations.toml"), FILE).unwrap();

    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml"]));
    for name in ["lake", "mirror", "tail"] {
        assert!(said.contains(&format!("create    {name}")), "{said}");
    }
    let listed = ok(writer(dir.path(), &["destination", "list", "--json"]));
    assert!(listed.contains("${MIRROR_PASSWORD}") && listed.contains("\"roll_up_rows\":5000"), "the whole spec, secrets as written: {listed}");
    let created = specs(&stage);
    assert_eq!(created.len(), 3);

    // Export, apply the export: nothing changes, not even a timestamp.
    let exported = ok(writer(dir.path(), &["destination", "export"]));
    std::fs::write(dir.path().join("exported.toml"), &exported).unwrap();
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "exported.toml"]));
    assert_eq!(said.lines().filter(|l| l.starts_with("unchanged ")).count(), 3, "{said}");
    assert_eq!(specs(&stage), created, "applying the export wrote nothing");
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml"]));
    assert_eq!(said.lines().filter(|l| l.starts_with("unchanged ")).count(), 3, "the original file holds too: {said}");

    // An operator's pause stays when the file does not say.
    ok(writer(dir.path(), &["destination", "pause", "tail"]));
    let paused = specs(&stage);
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml"]));
    assert!(said.contains("unchanged tail"), "{said}");
    assert_eq!(specs(&stage), paused);

    // Edit one, drop one: a dry run says so and writes nothing; then apply.
    let edited = FILE.replace("roll_up_rows = 5000", "roll_up_rows = 9000");
    let edited = &edited[..edited.find("[destination.tail]").unwrap()];
    std::fs::write(dir.path().join("destinations.toml"), edited).unwrap();
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml", "--prune", "--dry-run"]));
    assert!(said.contains("would update    lake") && said.contains("would remove    tail") && said.contains("\nunchanged mirror"), "{said}");
    assert_eq!(specs(&stage), paused, "a dry run writes nothing");
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml"]));
    assert!(said.contains("update    lake") && !said.contains("tail"), "without --prune, tail stays: {said}");
    let said = ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml", "--prune"]));
    assert!(said.contains("remove    tail") && said.contains("unchanged lake"), "{said}");
    let exported = ok(writer(dir.path(), &["destination", "export"]));
    assert!(exported.contains("roll_up_rows = 9000") && !exported.contains("[destination.tail]"), "{exported}");
}

#[test]
fn bad_specs_are_refused_whole_naming_each_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    std::fs::write(dir.path().join("strata.toml"), "[stage]\nurl = \"./stage\"\n").unwrap();
    std::fs::write(dir.path().join("ok.toml"), "[destination.one.to]\ntype = \"stdout\"\n").unwrap();
    ok(writer(dir.path(), &["destination", "apply", "-f", "ok.toml"]));
    let before = specs(&stage);

    let bad = "[destination.gcs.to]\ntype = \"files\"\nurl = \"gs://bucket/x\"\n\
               [destination.leaky.to]\ntype = \"postgres\"\nurl = \"postgres://app:hunter2@db/app\"\n\
               [destination.fine.to]\ntype = \"stdout\"\n";
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = writer(dir.path(), &["destination", "apply", "-f", "bad.toml", "--prune"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    for named in ["2 problems", "destination \"gcs\"", "unsupported scheme", "destination \"leaky\"", "password"] {
        assert!(said.contains(named), "{named} in: {said}");
    }
    assert!(!said.contains("hunter2"), "the password is not echoed: {said}");
    assert_eq!(specs(&stage), before, "nothing written, nothing pruned");

    std::fs::write(dir.path().join("typo.toml"), "[destination.one]\nstrat = \"latest\"\n[destination.one.to]\ntype = \"stdout\"\n").unwrap();
    let out = writer(dir.path(), &["destination", "apply", "-f", "typo.toml"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("typo.toml") && said.contains("destination.one") && said.contains("strat"), "{said}");
    assert_eq!(specs(&stage), before);

    // What `destination add` refuses at once, rather than fail later.
    let refused: [(&[&str], &str); 7] = [
        (&["--files", "gs://bucket/x"], "unsupported scheme"),
        (&["--stdout", "--mode", "history"], "--postgres"),
        (&["--webhook", "https://h/hook", "--on-error", "skip"], "on_error skip"),
        (&["--stdout", "--roll-up-rows", "10"], "--files"),
        (&["--stdout", "--timeout-secs", "5"], "--timeout-secs applies to"),
        (&["--stdout", "--schedule", "0 3 30 2 *"], "never fires"),
        (&["--files", "./lake", "--roll-up-rows", "0"], "roll_up_rows"),
    ];
    for (args, named) in refused {
        let out = writer(dir.path(), &[&["destination", "add", "bad"][..], args].concat());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains(named), "{args:?} is refused naming {named:?}: {said}");
        assert_eq!(specs(&stage), before, "{args:?}: add wrote nothing");
    }
    // Every field is settable from the command line.
    let out = writer(dir.path(), &["destination", "add", "lake", "--files", "./lake", "--roll-up-rows", "777", "--roll-up-secs", "9", "--stream", "orders"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("stream \"orders\" has no staged batch yet"), "a stream with nothing staged is noted: {said}");
    let exported = ok(writer(dir.path(), &["destination", "export"]));
    assert!(exported.contains("roll_up_rows = 777") && exported.contains("roll_up_secs = 9"), "{exported}");
}

#[test]
fn edit_applies_what_is_saved_and_keeps_what_it_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    std::fs::write(dir.path().join("strata.toml"), "[stage]\nurl = \"./stage\"\n").unwrap();
    std::fs::write(dir.path().join("destinations.toml"), FILE).unwrap();
    ok(writer(dir.path(), &["destination", "apply", "-f", "destinations.toml"]));
    let edit = |editor: &str| writer_with(dir.path(), &["destination", "edit", "lake"], &[("EDITOR", editor), ("WRITER", WRITER)]);
    let failed = |out: Output| {
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let said = ok(edit("sed -i 's/roll_up_rows = 5000/roll_up_rows = 6000/'"));
    assert!(said.contains("updated destination \"lake\""), "{said}");
    let exported = ok(writer(dir.path(), &["destination", "export"]));
    assert!(exported.contains("roll_up_rows = 6000") && exported.contains("[destination.mirror]"), "{exported}");
    let before = specs(&stage);

    // Saved unchanged, or the editor failed: nothing is written.
    assert!(ok(edit("true")).contains("unchanged"));
    assert!(failed(edit("false")).contains("exited with"));
    assert_eq!(specs(&stage), before);

    // An edit that cannot apply is refused, named, and kept for the user.
    for (editor, named) in [
        ("sed -i 's|s3://lake/strata|gs://lake/strata|'", "unsupported scheme"),
        ("sed -i 's/destination.lake/destination.pond/'", "exactly destination \"lake\""),
        ("sed -i 's/roll_up_rows/roll_up_rowz/'", "roll_up_rowz"),
        // Someone pauses lake while it is being edited.
        ("sh -c '\"$WRITER\" --config strata.toml destination pause lake >/dev/null && sed -i s/6000/7000/ \"$1\"' sh", "changed by someone else"),
    ] {
        let said = failed(edit(editor));
        assert!(said.contains(named) && said.contains("nothing changed; the edit is kept in"), "{editor}: {said}");
        let kept = said.split("kept in ").nth(1).unwrap().split(' ').next().unwrap();
        assert!(Path::new(kept).exists(), "{kept}");
        std::fs::remove_file(kept).unwrap();
        if !named.contains("someone else") {
            assert_eq!(specs(&stage), before, "{editor}: nothing written");
        }
    }
    let exported = ok(writer(dir.path(), &["destination", "export"]));
    assert!(exported.contains("roll_up_rows = 6000") && exported.contains("paused = true"), "the other change stands, the edit did not: {exported}");
    assert!(failed(writer_with(dir.path(), &["destination", "edit", "pond"], &[("EDITOR", "true")])).contains("no destination named \"pond\""));
}
