//! Authentication and policy cost per request, measured in-process on a real data dir (file
//! KEK, SQLite): what the `Auth` extractor and `Principal::require` add to every API request.
//!
//! Run: `cargo bench -p coffer-server --bench auth`

use std::time::Instant;

use coffer_core::Permission;

mod common;
use common::summary;

const ROUNDS: usize = 20_000;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fresh = common::fresh_data_dir().await;
        let (init, coffer) = (&fresh.init, &fresh.coffer);
        let token = init.api_token.expose_secret().to_owned();

        // Warm up: caches, prepared statements, page cache.
        for _ in 0..1000 {
            coffer
                .authenticate(&token, Default::default())
                .await
                .expect("auth");
        }
        let mut auth = Vec::with_capacity(ROUNDS);
        let mut auth_and_policy = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            std::hint::black_box(
                coffer
                    .authenticate(&token, Default::default())
                    .await
                    .expect("auth"),
            );
            auth.push(start.elapsed());
            let start = Instant::now();
            let who = coffer
                .authenticate(&token, Default::default())
                .await
                .expect("auth");
            who.require(init.account_id, Permission::Edit)
                .expect("allowed");
            auth_and_policy.push(start.elapsed());
            std::hint::black_box(who);
        }
        let mut policy = Vec::with_capacity(ROUNDS);
        let who = coffer
            .authenticate(&token, Default::default())
            .await
            .expect("auth");
        for _ in 0..ROUNDS {
            let start = Instant::now();
            std::hint::black_box(who.require(init.account_id, Permission::Edit)).expect("allowed");
            policy.push(start.elapsed());
        }
        println!("authenticate            {}", summary(auth));
        println!("authenticate + require  {}", summary(auth_and_policy));
        println!("require alone           {}", summary(policy));
    });
}
