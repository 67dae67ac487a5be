//! The AI-gateway Worker of Cloudflare's Secrets Store announcement, as a bound Coffer service:
//! read the OpenAI key through the SDK and send a chat completion with it.
//!
//! ```sh
//! coffer deploy --config wrangler.toml     # binds OPENAI_KEY, prints the service token
//! COFFER_SERVICE_TOKEN=coffersvc_... cargo run --example ai_gateway -- \
//!     https://gateway.ai.cloudflare.com/v1/ACCOUNT_TAG/openai/chat/completions
//! ```
//!
//! `--binding NAME` (or `AI_GATEWAY_BINDING`) reads another binding than `OPENAI_KEY`. Prints
//! the response's status, never the key.

use std::process::ExitCode;

const USAGE: &str = "usage: ai_gateway [--binding NAME] URL";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut binding = std::env::var("AI_GATEWAY_BINDING").unwrap_or_else(|_| "OPENAI_KEY".into());
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--binding" => binding = args.next().ok_or(USAGE)?,
            _ if url.is_none() && !arg.starts_with('-') => url = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let url = url.ok_or(USAGE)?;

    // `await env.open_AI_key.get()`
    let env = coffer_client::Env::from_env()?;
    let key = env.secret(&binding).get().await?;

    let body = serde_json::json!({
        "model": "gpt-3.5-turbo",
        "messages": [{"role": "user", "content": "Write me a pun about Cloudflare"}],
        "temperature": 0.8,
        "max_tokens": 100,
    });
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(key.expose_secret())
        .json(&body)
        .send()
        .await?;
    println!("{}", response.status());
    Ok(())
}
