//! Kernel enforcement of the node's cgroup driver on this host's cgroups (needs root).
//! `cargo test --test node_cgroup [-- NAME_FILTER...]`

mod node_suite;

fn main() {
    node_suite::helper_main();
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let (passed, failed) = node_suite::run(&filters, None);
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
