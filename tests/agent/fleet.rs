//! Per-node steps rolled over real agents: maxParallel, and an agent killed
//! in the middle of a step.

use std::time::{Duration, Instant};

use super::{instances, Fleet, FLEET, HEAD};
use crate::util::prereq::needs;
use crate::util::step_field;

kptest!(
    per_node_step_rolls_over_22_agents_at_most_max_parallel_at_once,
    |dir| {
        if !needs("per_node_step_rolls_over_22_agents", FLEET) {
            return;
        }
        let fleet = Fleet::start(&dir, "mp", 22, 4);
        fleet.write_inventory(&dir, |i| {
            format!("role: {}", if i % 2 == 0 { "even" } else { "odd" })
        });
        std::fs::create_dir(dir.join("marks")).expect("mkdir");
        // Each node records, from its own namespace, its address and when it
        // started and ended.
        dir.write(
            "wf.yaml",
            &format!(
                "{HEAD}spec:
  executors:
    - {{name: evens, selector: role=even, perNode: true, concurrency: 2}}
    - {{name: jump, nodes: [node-05, node-03], perNode: false}}
  steps:
    - id: roll
      phase: upgrade
      executor: per-node
      nodes: {{maxParallel: 3}}
      script: |
        f=marks/$KPILOT_INSTANCE
        echo \"start $(date +%s%N) $(ip -o -4 addr show dev eth0 | awk '{{print $4}}')\" >> $f
        sleep 0.3
        echo \"end $(date +%s%N)\" >> $f
    - id: odd-only
      phase: post-check
      needs: [roll]
      executor: per-node
      nodes: {{selector: role=odd}}
      command: [touch, \"marks/odd-{{{{params.x}}}}\"]
    - id: even-pool
      phase: post-check
      needs: [roll]
      executor: evens
      script: touch marks/pool-$KPILOT_INSTANCE
    - id: once
      phase: post-check
      needs: [roll]
      executor: jump
      script: echo $KPILOT_INSTANCE >> marks/once
  params:
    - {{name: x, default: ok}}
"
            ),
        );
        let ran = fleet.kp(
            &dir,
            &[
                "run",
                "wf.yaml",
                "--run-id",
                "r",
                "--inventory",
                "inventory.yaml",
            ],
        );
        let ran = ran.expect(0);
        let mut events = Vec::new();
        for (k, node) in fleet.nodes.iter().enumerate() {
            let marks = dir.read(&format!("marks/{}", node.name));
            let lines: Vec<&str> = marks.lines().collect();
            assert_eq!(
                lines.len(),
                2,
                "{} ran once: {marks}\n{}",
                node.name,
                ran.stderr
            );
            let start: Vec<&str> = lines[0].split_whitespace().collect();
            let end: Vec<&str> = lines[1].split_whitespace().collect();
            assert_eq!(start[0], "start");
            assert_eq!(
                start[2],
                format!("{}/24", fleet.nodes[k].addr),
                "ran in its namespace"
            );
            events.push((start[1].parse::<u128>().expect("ns"), 1i32));
            events.push((end[1].parse::<u128>().expect("ns"), -1i32));
            // The agent's own log: one attempt accepted, started and finished.
            let log = fleet.log(&node.name);
            let roll = |what: &str| {
                log.lines()
                    .filter(|l| l.contains("step.id=roll") && l.contains(what))
                    .count()
            };
            assert_eq!(roll("attempt started"), 1, "{log}");
            assert_eq!(roll("attempt finished"), 1, "{log}");
        }
        events.sort();
        let (mut now, mut peak) = (0, 0);
        for (_, d) in &events {
            now += d;
            peak = peak.max(now);
        }
        assert!(peak <= 3, "{peak} nodes ran at once; maxParallel is 3");
        assert!(peak >= 2, "the rollout never ran nodes side by side");
        assert!(dir.exists("marks/odd-ok"));
        // A pool fanned out over its members only; a perNode: false pool ran
        // once, on its first member by name.
        let evens: Vec<String> = (2..=22)
            .step_by(2)
            .map(|i| format!("node-{i:02}"))
            .collect();
        for n in &evens {
            assert!(dir.exists(&format!("marks/pool-{n}")), "{n}");
        }
        assert!(!dir.exists("marks/pool-node-01"));
        assert_eq!(dir.read("marks/once"), "node-03\n");
        let status = dir.status("r");
        let roll = instances(&status, "roll");
        assert_eq!(roll.len(), 22);
        assert!(roll.values().all(|(s, _)| s == "succeeded"), "{roll:?}");
        let pool = instances(&status, "even-pool");
        assert_eq!(pool.keys().cloned().collect::<Vec<_>>(), evens);
        let once = instances(&status, "once");
        assert_eq!(once.keys().cloned().collect::<Vec<_>>(), ["jump"]);
        let odd = instances(&status, "odd-only");
        assert_eq!(
            odd.keys().cloned().collect::<Vec<_>>(),
            (1..=22)
                .step_by(2)
                .map(|i| format!("node-{i:02}"))
                .collect::<Vec<_>>()
        );
    }
);

kptest!(
    an_agent_killed_mid_step_fails_its_node_and_the_others_go_on,
    |dir| {
        if !needs("an_agent_killed_mid_step", FLEET) {
            return;
        }
        let mut fleet = Fleet::start(&dir, "k9", 4, 2);
        fleet.write_inventory(&dir, |_| String::new());
        std::fs::create_dir(dir.join("started")).expect("mkdir");
        std::fs::create_dir(dir.join("done")).expect("mkdir");
        dir.write("slow-node-02", "");
        dir.write(
            "wf.yaml",
            &format!(
                "{HEAD}spec:
  steps:
    - id: upgrade
      phase: upgrade
      executor: per-node
      nodes: {{maxParallel: 4, maxFailures: 1}}
      script: |
        echo $KPILOT_ATTEMPT >> started/$KPILOT_INSTANCE
        if [ -e slow-$KPILOT_INSTANCE ]; then sleep 61.25; else sleep 2; fi
        touch done/$KPILOT_INSTANCE
"
            ),
        );
        let run = fleet
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
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kpilot run");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.exists("started/node-02") {
            assert!(Instant::now() < deadline, "node-02 never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        fleet.kill_agent(1);
        let out = run.wait_with_output().expect("kpilot ends");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let status = dir.status("r");
        let nodes = instances(&status, "upgrade");
        let (state, reason) = &nodes["node-02"];
        assert_eq!(state, "failed", "{nodes:?}");
        assert!(
            reason.contains("agent node-02 (10.213.0.12:7443) went away during the attempt"),
            "{reason}"
        );
        for other in ["node-01", "node-03", "node-04"] {
            assert_eq!(nodes[other].0, "succeeded", "{nodes:?}");
            assert!(dir.exists(&format!("done/{other}")));
        }
        assert!(!dir.exists("done/node-02"));
        assert!(
            step_field(&status, "upgrade", "reason").contains("node-02"),
            "{status:#}"
        );
        // The agent's guardian killed the step's process group with it.
        std::thread::sleep(Duration::from_millis(500));
        let left: Vec<String> = std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("sleep 61.25"))
            .collect();
        assert!(
            left.is_empty(),
            "the killed agent's step still runs: {left:?}"
        );
        // The node is back (with a new certificate); resume, without
        // --inventory, re-runs that node only.
        std::fs::remove_file(dir.join("slow-node-02")).expect("rm");
        fleet.restart_agent(1, 2);
        fleet.write_inventory(&dir, |_| String::new());
        fleet.kp(&dir, &["resume", "r"]).expect(0);
        let nodes = instances(&dir.status("r"), "upgrade");
        assert!(nodes.values().all(|(s, _)| s == "succeeded"), "{nodes:?}");
        assert!(dir.exists("done/node-02"));
        for other in ["node-01", "node-03", "node-04"] {
            assert_eq!(
                dir.read(&format!("started/{other}")).lines().count(),
                1,
                "{other} ran again"
            );
        }
        assert_eq!(dir.read("started/node-02").lines().count(), 2);
    }
);
