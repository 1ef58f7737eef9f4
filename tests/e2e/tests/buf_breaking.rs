//! The breaking-change guard (`scripts/buf-breaking`) on a copy of the contracts in a git
//! repository of its own: unchanged and additive contracts pass; renaming a field, changing a
//! field's number (in an events.proto) and removing an RPC each fail with buf's rule for it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use shop_e2e::{buf, workspace_root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(repo)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A repository with the contracts and the guard committed on `main`.
fn repository() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().to_path_buf();
    let root = workspace_root();
    copy_dir(&root.join("proto"), &repo.join("proto"));
    std::fs::create_dir_all(repo.join("scripts")).unwrap();
    std::fs::copy(
        root.join("scripts/buf-breaking"),
        repo.join("scripts/buf-breaking"),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "contracts"]);
    (dir, repo)
}

/// Runs the guard; its exit status and the rule types buf reported.
fn guard(repo: &Path) -> (bool, Vec<String>) {
    let output = Command::new("bash")
        .arg(repo.join("scripts/buf-breaking"))
        .args(["main", "--error-format=json"])
        .env("SHOP_BUF", buf().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rules = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["type"].as_str().map(str::to_owned))
        .collect();
    (output.status.success(), rules)
}

/// Replaces `from` with `to` in the contract file `path` (which must contain it).
fn edit(repo: &Path, path: &str, from: &str, to: &str) {
    let file = repo.join("proto").join(path);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{path} has no {from:?}");
    std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
}

fn reset(repo: &Path) {
    git(repo, &["checkout", "-q", "--", "proto"]);
}

#[test]
fn renames_renumbering_and_removed_rpcs_are_refused_additions_are_not() {
    let (_dir, repo) = repository();
    let events = "shop/catalog/v1/events.proto";
    let service = "shop/catalog/v1/catalog_service.proto";

    assert_eq!(guard(&repo), (true, vec![]), "unchanged");

    edit(
        &repo,
        events,
        "  string sku = 2;\n",
        "  string sku = 2;\n  // New.\n  string note = 99;\n",
    );
    assert_eq!(guard(&repo), (true, vec![]), "a new field is not a break");
    reset(&repo);

    edit(
        &repo,
        events,
        "  string sku = 2;",
        "  string stock_keeping_unit = 2;",
    );
    let (passed, rules) = guard(&repo);
    assert!(
        !passed && rules.contains(&"FIELD_SAME_NAME".to_owned()),
        "{rules:?}"
    );
    reset(&repo);

    edit(&repo, events, "  string sku = 2;", "  string sku = 7;");
    let (passed, rules) = guard(&repo);
    assert!(
        !passed && rules.contains(&"FIELD_NO_DELETE".to_owned()),
        "{rules:?}"
    );
    reset(&repo);

    let text = std::fs::read_to_string(repo.join("proto").join(service)).unwrap();
    let start = text.find("  rpc GetProduct(").unwrap();
    let end = start + text[start..].find("\n  }\n").unwrap() + "\n  }\n".len();
    std::fs::write(
        repo.join("proto").join(service),
        format!("{}{}", &text[..start], &text[end..]),
    )
    .unwrap();
    let (passed, rules) = guard(&repo);
    assert!(
        !passed && rules.contains(&"RPC_NO_DELETE".to_owned()),
        "{rules:?}"
    );
}
