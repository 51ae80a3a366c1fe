//! `dynamic_net!`: compiles an ONNX model into the calling crate at build
//! time, through the same Rust back end as `d2nnc compile`.
//!
//! ```ignore
//! d2nn_macros::dynamic_net! {
//!     /// The early-exit classifier.
//!     pub mod classifier = "models/early_exit.onnx";
//! }
//! // With knobs fixed at compile time (static pruning):
//! d2nn_macros::dynamic_net!(pub mod strict = "models/early_exit.onnx", fix(threshold = 0.9));
//!
//! let model = classifier::Model::new()?;
//! let (outputs, trace) = model.run_with(x.view(), &classifier::Knobs::default())?;
//! ```
//!
//! The module holds exactly what a generated crate's `lib.rs` holds
//! (`Model`, `Knobs`, `Inputs`, `Outputs`, `Scratch`, the name and shape
//! constants). The path is relative to the crate's `CARGO_MANIFEST_DIR`;
//! the model file is read through `include_bytes!`, so Cargo rebuilds when
//! it changes. The calling crate must depend on `d2nn-runtime`.
//!
//! Errors are `compile_error!`s on the path literal (file not found, a node
//! the back end cannot compile, named) or on the `fix` option (a knob the
//! model does not have).

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use std::path::{Path, PathBuf};
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Ident, LitFloat, LitInt, LitStr, Token, Visibility};

/// `attrs vis mod name = "path" [, fix(knob = value, …)] [;|,]`
struct Invocation {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
    path: LitStr,
    fixes: Vec<(Ident, f32, Span)>,
}

impl Parse for Invocation {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        input.parse::<Token![mod]>().map_err(|e| syn::Error::new(e.span(), "expected `mod NAME = \"path/to/model.onnx\"`"))?;
        let name: Ident = input.parse()?;
        input.parse::<Token![=]>()?;
        let path: LitStr = input.parse().map_err(|e| syn::Error::new(e.span(), "expected the model's path as a string literal"))?;
        let mut fixes = Vec::new();
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let option: Ident = input.parse()?;
            if option != "fix" {
                return Err(syn::Error::new(option.span(), format!("unknown option `{option}`; the only option is `fix(knob = value, …)`")));
            }
            let content;
            syn::parenthesized!(content in input);
            while !content.is_empty() {
                let knob: Ident = content.parse()?;
                content.parse::<Token![=]>()?;
                let negative = content.peek(Token![-]);
                if negative {
                    content.parse::<Token![-]>()?;
                }
                let value = if content.peek(LitInt) {
                    content.parse::<LitInt>()?.base10_parse::<f32>()?
                } else {
                    content.parse::<LitFloat>().map_err(|e| syn::Error::new(e.span(), "expected a number"))?.base10_parse::<f32>()?
                };
                let span = knob.span();
                fixes.push((knob, if negative { -value } else { value }, span));
                if !content.is_empty() {
                    content.parse::<Token![,]>()?;
                }
            }
        }
        if input.peek(Token![;]) {
            input.parse::<Token![;]>()?;
        }
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the model path"));
        }
        Ok(Invocation { attrs, vis, name, path, fixes })
    }
}

/// Compiles the ONNX model at the given path (relative to the crate's
/// `CARGO_MANIFEST_DIR`) into a module; see the crate docs.
#[proc_macro]
pub fn dynamic_net(input: TokenStream) -> TokenStream {
    let invocation = syn::parse_macro_input!(input as Invocation);
    match expand(&invocation) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(inv: &Invocation) -> syn::Result<proc_macro2::TokenStream> {
    let started = std::time::Instant::now();
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).unwrap_or_default();
    let path = manifest.join(inv.path.value());
    if !path.is_file() {
        return Err(syn::Error::new(inv.path.span(), format!("model file not found: {:?} (paths are relative to the crate's CARGO_MANIFEST_DIR)", inv.path.value())));
    }
    let path = path.canonicalize().map_err(|e| syn::Error::new(inv.path.span(), format!("{}: {e}", path.display())))?;
    let fixes: Vec<(String, f32)> = inv.fixes.iter().map(|(k, v, _)| (k.to_string(), *v)).collect();
    let source = inv.path.value();
    let options = d2nnc::back::rust::Options {
        source: source.clone(),
        weights: d2nnc::back::rust::WeightsPath::Provided,
        comments: false,
        track: vec![path.clone()],
        fixed: fixes.clone(),
    };
    let generated = d2nnc::back::rust::compile_file(&path, &fixes, &options).map_err(|e| {
        let span = match &e {
            d2nnc::Error::Knob(d2nnc::dynamic::KnobError::Unknown { name, .. } | d2nnc::dynamic::KnobError::NotFinite { name, .. }) => {
                inv.fixes.iter().find(|(k, ..)| k == name).map_or(inv.path.span(), |f| f.2)
            }
            _ => inv.path.span(),
        };
        syn::Error::new(span, format!("{source}: {e}"))
    })?;
    let weights_path = store_weights(&generated.weights).map_err(|e| syn::Error::new(inv.path.span(), format!("cannot write the weights file: {e}")))?;
    let weights_path = weights_path.display().to_string();
    let (attrs, vis, name, body) = (&inv.attrs, &inv.vis, &inv.name, generated.tokens);
    // `D2NN_MACROS_TIMING=1 cargo build` reports how long each expansion took
    // (the compiler's work; rustc's handling of the tokens comes after).
    if std::env::var_os("D2NN_MACROS_TIMING").is_some() {
        eprintln!("dynamic_net!({source}): expanded in {:.2} s ({} bytes of weights)", started.elapsed().as_secs_f64(), generated.weights.len());
    }
    Ok(quote! {
        #(#attrs)*
        #vis mod #name {
            #body
            /// The weights file: every constant of the model, read once by [`Model::new`].
            static WEIGHTS: &[u8] = include_bytes!(#weights_path);
        }
    })
}

/// Writes `bytes` to a content-addressed file in this crate's build
/// directory (atomically, so parallel expansions agree) and returns its path.
fn store_weights(bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = Path::new(env!("OUT_DIR")).join("weights");
    std::fs::create_dir_all(&dir)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let path = dir.join(format!("{hash:016x}-{}.bin", bytes.len()));
    if std::fs::metadata(&path).map(|m| m.len() == bytes.len() as u64).unwrap_or(false) {
        return Ok(path);
    }
    let tmp = dir.join(format!("{hash:016x}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
