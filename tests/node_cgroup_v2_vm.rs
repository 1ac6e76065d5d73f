//! The same enforcement suite on cgroup v2, inside a VM booted with `cgroup_no_v1=all`
//! (tests/vm/run-v2.sh; see shared CGROUP-V2-VM.md). This very binary is copied into the VM's
//! initramfs and run there with `--guest`.

mod node_suite;

use a2a::node::cgroup::CgroupVersion;

fn main() {
    node_suite::helper_main();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--guest") {
        let filters: Vec<String> = args.into_iter().filter(|a| !a.starts_with('-')).collect();
        let (passed, failed) = node_suite::run(&filters, Some(CgroupVersion::V2));
        println!("{passed} passed, {failed} failed");
        std::process::exit(if failed == 0 { 0 } else { 1 });
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vm/run-v2.sh");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this test binary: {e}");
            std::process::exit(1);
        }
    };
    let filters = args.iter().filter(|a| !a.starts_with('-'));
    let status = std::process::Command::new("bash").arg(script).arg(&exe).arg("--guest").args(filters).status();
    let ok = match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!(
                "the v2 suite failed inside the VM ({s}); exit 3 means the VM ingredients could \
                 not be fetched (needs apt-get and Debian's package index), 99 no result marker"
            );
            false
        }
        Err(e) => {
            eprintln!("cannot run {script}: {e}");
            false
        }
    };
    println!("{} passed, {} failed", usize::from(ok), usize::from(!ok));
    std::process::exit(if ok { 0 } else { 1 });
}
