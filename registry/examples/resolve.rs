//! Debugging aid: `cargo run -p kiln-registry --example resolve -- REF [os/arch[/variant]]`
//! prints what `resolve` returns and checks every layer's digest by streaming it.

use futures::StreamExt;
use kiln_registry::{Platform, Reference, RegistryClient, RegistryConfig, Verifier};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let reference = Reference::parse(&args.next().ok_or("usage: resolve REF [PLATFORM]")?)?;
    let platform = match args.next() {
        Some(p) => p.parse::<Platform>()?,
        None => Platform::host(),
    };
    let client = RegistryClient::new(RegistryConfig::default())?;
    let image = client.resolve(&reference, &platform).await?;
    println!("reference:  {reference}");
    println!("pinned:     {}", image.pinned);
    println!(
        "index:      {:?}",
        image.index_digest.as_ref().map(|d| d.to_string())
    );
    println!(
        "manifest:   {} ({})",
        image.manifest_digest, image.manifest_media_type
    );
    println!(
        "config:     {} ({} bytes)",
        image.config_digest,
        image.config_bytes.len()
    );
    println!("platform:   {}", image.platform);
    for layer in &image.layers {
        let mut stream = client.fetch_blob_verified(&reference, layer).await?;
        let mut v = Verifier::new(layer.digest.algorithm());
        while let Some(chunk) = stream.next().await {
            v.update(&chunk?);
        }
        println!(
            "layer:      {} {} bytes ok ({})",
            layer.digest,
            v.len(),
            layer.media_type
        );
    }
    Ok(())
}
