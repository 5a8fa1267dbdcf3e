//! Stops a build without a crypto provider with a message that names
//! certkeeper's features, before the dependencies' own errors about theirs.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let enabled = |feature: &str| std::env::var_os(format!("CARGO_FEATURE_{feature}")).is_some();
    if !enabled("AWS_LC_RS") && !enabled("RING") {
        println!(
            "cargo::error=certkeeper needs a crypto provider: enable its `aws-lc-rs` feature \
             (the default) or its `ring` feature"
        );
    }
}
