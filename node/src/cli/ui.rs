//! `fairgrid ui`: a one-time link to the running node's dashboard. The
//! code is in the URL's fragment, which the browser keeps to itself, and
//! the page trades it for the token once.

use super::query::{QueryArgs, client};

pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    let client = client(&args)?;
    let link = super::runtime()?.block_on(client.ui_link())?;
    let url = format!("{}{}", client.base().trim_end_matches('/'), link.path);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"url": url, "expires_in_secs": link.expires_in_secs})
        );
    } else {
        println!("{url}");
        println!(
            "open it within {} s; it works once (run `fairgrid ui` again for another)",
            link.expires_in_secs
        );
    }
    Ok(())
}
