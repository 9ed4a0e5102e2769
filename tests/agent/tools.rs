//! The agent's node tools (`iptables-save`, `nft`, `ip`) are started like
//! any step's process: they die with the agent on kill -9.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::time::Duration;

use super::{Fleet, FLEET, HEAD};
use crate::util::prereq::needs;
use crate::util::{gone_within, pid_in, Reap};

kptest!(a_node_tool_dies_with_its_agent_on_kill_9, |dir| {
    if !needs("a_node_tool_dies_with_its_agent_on_kill_9", FLEET) {
        return;
    }
    // An `iptables-save` that hangs, first on the agent's PATH.
    let pid_file = dir.join("iptables-save.pid");
    let fake = dir.write(
        "bin/iptables-save",
        &format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 300\n",
            pid_file.display()
        ),
    );
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut fleet = Fleet::start_with_env(&dir, "tl", 1, 1, &[("PATH", &path)]);
    fleet.write_inventory(&dir, |_| String::new());
    dir.write(
        "wf.yaml",
        &format!(
            "{HEAD}spec:
  steps:
    - id: fw
      phase: pre-check
      executor: per-node
      check: {{query: node.iptables, expect: 'true', timeout: 10m}}
"
        ),
    );
    let mut kpilot = fleet
        .cmd(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--inventory",
                "inventory.yaml",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kpilot starts");
    let pid = pid_in(&pid_file, "the agent's iptables-save");
    let _reap = Reap(pid);
    fleet.kill_agent(0);
    let gone = gone_within(pid, Duration::from_secs(5));
    let _ = kpilot.kill();
    let _ = kpilot.wait();
    assert!(
        gone,
        "the agent's iptables-save {pid} outlived the agent's kill -9 by 5s"
    );
});
