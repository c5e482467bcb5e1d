//! MISC_CHECK: exit statuses, misc_dynamic weights, and hung scripts killed with everything
//! they forked.

use std::time::Duration;

use fulcrum_checkers::{check_misc, MiscCommand};
use fulcrum_health::Outcome;

fn sh(command: &str) -> MiscCommand {
    MiscCommand {
        command: command.into(),
        ids: None,
    }
}

#[tokio::test]
async fn exit_statuses() {
    assert_eq!(
        check_misc(&sh("exit 0"), false, 5).await,
        Outcome::Success { weight_delta: 0 }
    );
    assert_eq!(
        check_misc(&sh("exit 1"), false, 5).await,
        Outcome::Failure("MISC_CHECK `exit 1` exited with status 1".into())
    );
    // Without misc_dynamic every non-zero status is down.
    assert_eq!(
        check_misc(&sh("exit 12"), false, 5).await,
        Outcome::Failure("MISC_CHECK `exit 12` exited with status 12".into())
    );
    assert_eq!(
        check_misc(&sh("kill -9 $$"), false, 5).await,
        Outcome::Failure("MISC_CHECK `kill -9 $$` was killed by a signal".into())
    );
}

#[tokio::test]
async fn misc_dynamic_sets_the_weight_to_status_minus_two() {
    // Configured weight 5; exit 12 means weight 10, an adjustment of +5.
    assert_eq!(
        check_misc(&sh("exit 12"), true, 5).await,
        Outcome::Success { weight_delta: 5 }
    );
    // Exit 2 means weight 0: up, but quiesced.
    assert_eq!(
        check_misc(&sh("exit 2"), true, 5).await,
        Outcome::Success { weight_delta: -5 }
    );
    assert_eq!(
        check_misc(&sh("exit 1"), true, 5).await,
        Outcome::Failure("MISC_CHECK `exit 1` exited with status 1".into())
    );
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie is dead; only its parent's reaping is missing.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_hung_script_is_killed_with_its_children() {
    let dir = std::env::temp_dir().join(format!("fulcrum-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let misc = sh(&script);
    let check = check_misc(&misc, false, 1);
    // The checker's misc_timeout drops the check; a short timeout stands in for it.
    assert!(tokio::time::timeout(Duration::from_millis(500), check)
        .await
        .is_err());
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if !alive(pid) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "the script's child {pid} survived the timeout");
}
