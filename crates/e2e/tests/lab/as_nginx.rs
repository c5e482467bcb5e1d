//! The binary as `nginx` (a symlink), driven as Debian's nginx unit drives nginx
//! (`Type=forking`, `PIDFile=/run/nginx.pid`): `nginx -t -q -g 'daemon on; master_process
//! on;'`, then `nginx -g ...` (the command returns once the daemon is up, its pid file
//! written), `nginx -g ... -s reload`, `-s reopen` after logrotate renames the access log,
//! and SIGQUIT to stop, which closes idle connections and removes the pid file; and
//! nginx's binary upgrade (USR2, WINCH, QUIT) under wrk's load.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fulcrum_e2e::{pid_in, workers_of, Reaper, Scratch};
use fulcrum_lab::{require_root, wait_for, Agent, Host, Lab};

const GLOBALS: &str = "daemon on; master_process on;";

fn conf(dir: &Path, extra: &str) -> String {
    format!(
        "pid {dir}/nginx.pid;\nevents {{}}\nhttp {{\n    access_log {dir}/access.log;\n    upstream u {{\n        server 127.0.0.1:9001;\n    }}\n    server {{\n        listen 127.0.0.1:8080;\n        location / {{\n            proxy_pass http://u;\n        }}\n{extra}    }}\n}}\n",
        dir = dir.display()
    )
}

#[test]
fn debians_nginx_unit_runs_it() {
    if !require_root("debians_nginx_unit_runs_it") {
        return;
    }
    let dir = Scratch::new("asng");
    let mut lab = Lab::new("asng")
        .unwrap()
        .with_agent(Agent::new(fulcrum_e2e::bin(), &["lab-agent"]));
    let host = lab.host("ng").unwrap();
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    let nginx = dir.0.join("nginx");
    std::os::unix::fs::symlink(fulcrum_e2e::bin(), &nginx).unwrap();
    let file = dir.0.join("nginx.conf");
    std::fs::write(&file, conf(&dir.0, "")).unwrap();
    let pid_file = dir.0.join("nginx.pid");
    let _reaper = Reaper(pid_file.clone());
    let sock = dir.0.join("ng.sock");
    let cmd = |host: &Host, args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &host.netns])
            .arg(&nginx)
            .args(args)
            .arg("-c")
            .arg(&file)
            .env("FULCRUM_CONTROL", &sock)
            .output()
            .unwrap()
    };

    // ExecStartPre: quiet when the file is good.
    let pre = cmd(&host, &["-t", "-q", "-g", GLOBALS]);
    assert!(pre.status.success(), "{pre:?}");
    assert!(
        pre.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&pre.stderr)
    );
    let loud = cmd(&host, &["-t"]);
    assert!(String::from_utf8_lossy(&loud.stderr).contains(&format!(
        "nginx: configuration file {} test is successful",
        file.display()
    )));
    // -g's directives count: one the file has too is a duplicate, as in nginx.
    let dup = cmd(
        &host,
        &["-t", "-g", &format!("pid {}/other.pid;", dir.0.display())],
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("\"pid\" directive is duplicate"),
        "{dup:?}"
    );

    // ExecStart: the command returns once the daemon serves, its pid file written.
    let start = cmd(&host, &["-g", GLOBALS]);
    assert!(start.status.success(), "{start:?}");
    let pid = pid_in(&pid_file).expect("no pid file once the start returned");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let get = |path: &str| {
        lab.request(&host, "127.0.0.1:8080", &[path], &[])
            .unwrap()
            .into_iter()
            .map(|(s, b)| format!("{s} {}", b.lines().next().unwrap_or("")))
            .collect::<Vec<_>>()
    };
    assert_eq!(get("/"), ["200 b1"]);

    // ExecReload: `-s reload` signals the pid in the pid file; the new location answers.
    std::fs::write(
        &file,
        conf(
            &dir.0,
            "        location = /new {\n            return 204;\n        }\n",
        ),
    )
    .unwrap();
    let reload = cmd(&host, &["-g", GLOBALS, "-s", "reload"]);
    assert!(reload.status.success(), "{reload:?}");
    assert!(
        wait_for(Duration::from_secs(5), || get("/new") == ["204 "]).is_some(),
        "the reload did not apply: {:?}",
        get("/new")
    );

    // logrotate: rename, then `-s reopen`.
    let access = dir.0.join("access.log");
    std::fs::rename(&access, dir.0.join("access.log.1")).unwrap();
    assert!(cmd(&host, &["-s", "reopen"]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    get("/after-reopen");
    assert!(
        wait_for(Duration::from_secs(5), || std::fs::read_to_string(&access)
            .is_ok_and(|t| t.contains("/after-reopen")))
        .is_some(),
        "no new access.log after -s reopen"
    );

    // ExecStop: SIGQUIT, a graceful stop: an idle keep-alive connection (one request
    // answered, then silent) is closed, the process ends, the pid file goes.
    let idle = lab
        .agent_command(&host)
        .map(|mut argv| {
            argv.extend(
                [
                    "linger",
                    "--connect",
                    "127.0.0.1:8080",
                    "--requests",
                    "1",
                    "--for-ms",
                    "10000",
                ]
                .map(Into::into),
            );
            argv
        })
        .unwrap();
    let mut holder = Command::new(&idle[0])
        .args(&idle[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let quit = std::time::Instant::now();
    Command::new("kill")
        .args(["-QUIT", &pid.to_string()])
        .status()
        .unwrap();
    let gone = wait_for(Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{pid}")).exists() && !pid_file.exists()
    });
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(gone.is_some(), "SIGQUIT did not stop it");
    assert!(
        quit.elapsed() < Duration::from_secs(3),
        "the idle connection held the stop for {:?}",
        quit.elapsed()
    );
    // With nothing running, -s says so and fails.
    let none = cmd(&host, &["-s", "reload"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("nginx: [error] open()"));
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{name} {pid}");
}

/// The program behind the `nginx` symlink, replaced as a package upgrade replaces it
/// (a new file renamed over the old): a script that leaves a mark and runs on as the
/// real binary, or one that fails.
fn install(dir: &Path, script: &str) {
    let tmp = dir.join("fulcrum.new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, dir.join("fulcrum")).unwrap();
}

/// nginx's binary upgrade while wrk keeps 16 keep-alive connections busy: USR2 starts
/// the file now at the program's path on the same listening sockets (the pid file
/// becomes .oldbin), WINCH lets the old workers finish, QUIT ends the old master. Not a
/// request fails and no socket errs. Before it, a new binary that cannot start leaves
/// the old one serving with its pid file back.
#[test]
fn binary_upgrade_under_load_loses_nothing() {
    if !require_root("binary_upgrade_under_load_loses_nothing") {
        return;
    }
    let dir = Scratch::new("asngup");
    let mut lab = Lab::new("asngup")
        .unwrap()
        .with_agent(Agent::new(fulcrum_e2e::bin(), &["lab-agent"]));
    let host = lab.host("ng").unwrap();
    lab.serve(&host, "b1", "127.0.0.1:9001", true).unwrap();
    // nginx -> fulcrum -> the binary built; `fulcrum` is what an upgrade replaces.
    std::os::unix::fs::symlink(fulcrum_e2e::bin(), dir.0.join("fulcrum")).unwrap();
    let nginx = dir.0.join("nginx");
    std::os::unix::fs::symlink(dir.0.join("fulcrum"), &nginx).unwrap();
    let file = dir.0.join("nginx.conf");
    std::fs::write(&file, conf(&dir.0, "")).unwrap();
    let pid_file = dir.0.join("nginx.pid");
    let old_pid_file = dir.0.join("nginx.pid.oldbin");
    let _reapers = (Reaper(pid_file.clone()), Reaper(old_pid_file.clone()));
    let sock = dir.0.join("ng.sock");
    let cmd = |args: &[&str]| -> Output {
        Command::new("ip")
            .args(["netns", "exec", &host.netns])
            .arg(&nginx)
            .args(args)
            .arg("-c")
            .arg(&file)
            .env("FULCRUM_CONTROL", &sock)
            .output()
            .unwrap()
    };
    let start = cmd(&["-g", GLOBALS]);
    assert!(start.status.success(), "{start:?}");
    let old = pid_in(&pid_file).expect("no pid file once the start returned");

    let wrk = Command::new("ip")
        .args(["netns", "exec", &host.netns, "wrk", "-t2", "-c16", "-d8s"])
        .arg("http://127.0.0.1:8080/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));

    // A new binary that fails: the old one takes its pid file back and serves on.
    let failed_mark = dir.0.join("failed-ran");
    install(
        &dir.0,
        &format!("#!/bin/sh\ntouch {}\nexit 1\n", failed_mark.display()),
    );
    signal(old, "USR2");
    let back = wait_for(Duration::from_secs(5), || {
        failed_mark.exists() && pid_in(&pid_file) == Some(old) && !old_pid_file.exists()
    });
    assert!(
        back.is_some(),
        "the pid file did not come back after a failed upgrade"
    );

    // The real upgrade: the file at the path now, with the same arguments.
    let mark = dir.0.join("new-ran");
    install(
        &dir.0,
        &format!(
            "#!/bin/bash\necho \"$NGINX\" > {}\nexec -a \"$0\" {} \"$@\"\n",
            mark.display(),
            fulcrum_e2e::bin().display()
        ),
    );
    signal(old, "USR2");
    let serving = |p: &u32| *p != old && alive(*p) && workers_of(*p).len() == 1;
    let up = wait_for(Duration::from_secs(10), || {
        pid_in(&pid_file).is_some_and(|p| serving(&p))
    });
    assert!(up.is_some(), "no new master serving after USR2");
    let new = pid_in(&pid_file).unwrap();
    assert_eq!(
        pid_in(&old_pid_file),
        Some(old),
        "the old pid file is .oldbin"
    );
    let passed = std::fs::read_to_string(&mark).unwrap();
    assert!(
        passed.trim().ends_with(';'),
        "the listening sockets in NGINX: {passed:?}"
    );
    // Both serve for a while, as with nginx; then WINCH: the old workers finish.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(workers_of(old).len(), 1);
    signal(old, "WINCH");
    let drained = wait_for(Duration::from_secs(10), || workers_of(old).is_empty());
    assert!(
        drained.is_some(),
        "the old workers did not stop after WINCH"
    );
    assert!(alive(old), "WINCH stopped the old master");
    // QUIT: the old master goes and takes .oldbin with it; the new one stays.
    signal(old, "QUIT");
    let gone = wait_for(Duration::from_secs(10), || {
        !alive(old) && !old_pid_file.exists()
    });
    assert!(gone.is_some(), "the old master did not stop after QUIT");
    assert_eq!(pid_in(&pid_file), Some(new));

    let out = wrk.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    assert!(out.status.success(), "wrk: {out:?}");
    assert!(
        !report.contains("Socket errors") && !report.contains("Non-2xx"),
        "wrk saw errors across the upgrade:\n{report}"
    );
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(requests > 1000, "wrk made {requests} requests");

    // The new master is nginx's now: it answers and stops as one.
    let answer = lab.request(&host, "127.0.0.1:8080", &["/"], &[]).unwrap();
    assert_eq!(answer[0].0, 200);
    assert!(cmd(&["-s", "quit"]).status.success());
    let stopped = wait_for(Duration::from_secs(10), || {
        !alive(new) && !pid_file.exists()
    });
    assert!(stopped.is_some(), "the new master did not stop");
}
