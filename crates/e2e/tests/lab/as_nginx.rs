//! The binary as `nginx` (a symlink), driven as Debian's nginx unit drives nginx
//! (`Type=forking`, `PIDFile=/run/nginx.pid`): `nginx -t -q -g 'daemon on; master_process
//! on;'`, then `nginx -g ...` (the command returns once the daemon is up, its pid file
//! written), `nginx -g ... -s reload`, `-s reopen` after logrotate renames the access log,
//! and SIGQUIT to stop, which closes idle connections and removes the pid file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fulcrum_e2e::{pid_in, Reaper, Scratch};
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
