// Scratch (not committed): runs each check of the listed modules, reporting pass/fail each.
use coffer_postgres::testing::{Databases, cluster_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scratch_each() {
    let Some(cluster) = cluster_url("scratch_each") else {
        return;
    };
    let only = std::env::var("ONLY").unwrap_or_default();
    let mods: Vec<String> = only.split(',').map(str::to_owned).collect();
    let databases = std::sync::Arc::new(Databases::default());
    for check in coffer_storage::conformance::checks() {
        if !mods.iter().any(|m| check.module == m || check.path() == *m) {
            continue;
        }
        let s = databases.fresh(&cluster).await;
        let c = *check;
        let r = tokio::spawn(async move { c.run(s).await }).await;
        match r {
            Ok(()) => eprintln!("PASS {}", check.path()),
            Err(e) => {
                let p = e.into_panic();
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!(
                    "FAIL {}: {}",
                    check.path(),
                    m.lines().take(6).collect::<Vec<_>>().join(" | ")
                );
            }
        }
    }
}
