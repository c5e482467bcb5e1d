//! The real IPVS as a lab host: Debian's kernel under qemu (this machine's kernel has no
//! IPVS), on a lab switch through a tap device, driven over its serial console.
//!
//! `scripts/ipvs-vm` builds the image once (cached, shared by parallel tests); each
//! [`IpvsVm`] boots its own copy-on-write view of it (`-snapshot`) with qemu running in
//! the switch's namespace, so the namespace's deletion also ends the VM. Commands run in
//! the VM's shell one at a time; their output comes back delimited by a marker.
//! Software emulation is slow: a functional peer, never a benchmark.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{ip, LabError, Result, Switch};

/// A running VM with the real IPVS; killed when dropped.
#[derive(Debug)]
pub struct IpvsVm {
    child: Child,
    stdin: ChildStdin,
    console: Arc<Mutex<String>>,
    /// Console output already consumed by earlier commands.
    read: usize,
    seq: u32,
}

/// Builds the image if needed (scripts/ipvs-vm) and returns its directory.
pub fn image() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ipvs-vm");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| LabError::Spawn {
            command: script.display().to_string(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(LabError::NotReady(format!(
            "{} failed ({}); its log is build.log in the image directory",
            script.display(),
            out.status
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

impl IpvsVm {
    /// Boots the VM on `switch` with the given addresses on its NIC (eth0 in the VM),
    /// and waits until its shell answers.
    pub fn start(switch: &Switch, addrs: &[&str]) -> Result<IpvsVm> {
        let dir = image()?;
        let tap = "tapvm";
        ip(&[
            "-n",
            &switch.netns,
            "tuntap",
            "add",
            "dev",
            tap,
            "mode",
            "tap",
        ])?;
        ip(&["-n", &switch.netns, "link", "set", tap, "master", "br0"])?;
        ip(&["-n", &switch.netns, "link", "set", tap, "up"])?;
        let mut append = String::from(
            "console=ttyS0 root=/dev/vda rw init=/fulcrum-init quiet loglevel=1 net.ifnames=0",
        );
        for a in addrs {
            append.push_str(&format!(" fulcrum.addr={a}"));
        }
        let mut child = Command::new("ip")
            .args(["netns", "exec", &switch.netns, "qemu-system-x86_64"])
            .args(["-accel", "tcg", "-m", "768", "-smp", "1"])
            .args(["-display", "none", "-serial", "stdio", "-monitor", "none"])
            .args(["-no-reboot", "-snapshot"])
            .arg("-kernel")
            .arg(dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(dir.join("initrd.img"))
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio",
                dir.join("rootfs.img").display()
            ))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .args(["-append", &append])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::Spawn {
                command: "qemu-system-x86_64".into(),
                source: e,
            })?;
        let stdin = child.stdin.take().expect("piped");
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]);
                    console
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&text);
                }
            });
        }
        let mut vm = IpvsVm {
            child,
            stdin,
            console,
            read: 0,
            seq: 0,
        };
        // Software emulation boots in tens of seconds, more on a busy machine.
        vm.wait_for("FULCRUM-VM-READY", Duration::from_secs(180))?;
        // What the shell says as it starts (no job control on a serial console) goes with
        // a first command, not into a test's.
        vm.run("true")?;
        Ok(vm)
    }

    fn wait_for(&mut self, marker: &str, limit: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            {
                let c = self.console.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = c[self.read..].find(marker) {
                    let out = c[self.read..self.read + at].to_string();
                    self.read += at + marker.len();
                    return Ok(out);
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::NotReady(format!(
                    "the IPVS VM exited ({status}):\n{}",
                    self.console()
                )));
            }
            if start.elapsed() > limit {
                return Err(LabError::NotReady(format!(
                    "the IPVS VM did not print {marker} within {limit:?}:\n{}",
                    self.console()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.console
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a shell command line in the VM: whether it exited 0, and its output (stdout
    /// and stderr).
    pub fn run(&mut self, command: &str) -> Result<(bool, String)> {
        self.run_code(command).map(|(code, out)| (code == 0, out))
    }

    /// Runs a shell command line in the VM: its exit code, and its output (stdout and
    /// stderr).
    pub fn run_code(&mut self, command: &str) -> Result<(i32, String)> {
        self.seq += 1;
        let end = format!("__FULCRUM_END_{}__", self.seq);
        // The marker is printed by printf from pieces, so the command's echo (if the
        // console echoes) never contains it.
        let line = format!(
            "{command} 2>&1; printf '%s%s %s\\n' __FULCRUM_END_ '{}__' \"$?\"\n",
            self.seq
        );
        self.stdin
            .write_all(line.as_bytes())
            .and_then(|()| self.stdin.flush())
            .map_err(|e| LabError::NotReady(format!("the IPVS VM's console: {e}")))?;
        let out = self.wait_for(&end, Duration::from_secs(60))?;
        let status = self.wait_for("\n", Duration::from_secs(5))?;
        // The shell's prompt may precede the output.
        let out = out
            .trim_start_matches(['\r', '\n'])
            .trim_start_matches("# ")
            .replace('\r', "");
        Ok((status.trim().parse().unwrap_or(-1), out))
    }

    /// Runs a command that must succeed: its output.
    pub fn must(&mut self, command: &str) -> Result<String> {
        match self.run(command)? {
            (true, out) => Ok(out),
            (false, out) => Err(LabError::Command {
                command: format!("(ipvs vm) {command}"),
                status: "non-zero".into(),
                stderr: out,
            }),
        }
    }
}

impl Drop for IpvsVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
