//! ONNX import: a `ModelProto` (opsets 9 and later, from torch.onnx's TorchScript and
//! dynamo exporters, tf2onnx, paddle2onnx...) becomes the engine's graph and weights.
//!
//! The pipeline: decode the protobuf (`onnx-protobuf`) and the initializers ([`tensor`]);
//! rewrite the node list ([`rewrite`]: final Softmax stripped, erf-GELU, SiLU, HardSwish
//! and Pad-into-Conv fused, dead nodes dropped); then walk it in order, folding what is
//! constant ([`fold`]) and mapping the rest onto IR nodes, one importer per op family
//! ([`ops`]); last, attention's scalar scales fold into its products ([`matmul_scale`]).
//! Value names, node names and PyTorch module paths ([`names`]) all become layer names.

mod builder;
mod fold;
mod matmul_scale;
mod names;
mod node;
mod ops;
mod rewrite;
mod tensor;

pub use fold::FOLDED;
pub use names::nearest;
pub use ops::SUPPORTED;

use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Transpose};
use crate::model::{IMAGENET_MEAN, IMAGENET_STD, Model, Output};
use builder::{Act, Builder, Value, graph_err};
use node::ONode;
use onnx_protobuf::{Message, ModelProto, ValueInfoProto};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::rc::Rc;
use tensor::Const;

/// How the model's image input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[N, 3, H, W]` (PyTorch, paddle).
    Nchw,
    /// `[N, H, W, 3]` (TensorFlow and Keras through tf2onnx).
    Nhwc,
}

impl std::str::FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nchw" => Ok(Self::Nchw),
            "nhwc" => Ok(Self::Nhwc),
            _ => Err(Error::Invalid(format!(
                "--layout `{s}`: expected nchw or nhwc"
            ))),
        }
    }
}

/// What the file cannot say for itself.
#[derive(Clone, Debug, Default)]
pub struct OnnxOptions {
    /// Input `[H, W]`; required when the model's are dynamic.
    pub size: Option<[usize; 2]>,
    /// Overrides the layout read from the input's shape.
    pub layout: Option<Layout>,
}

/// Whether `bytes` parse as an ONNX model with a graph.
pub fn is_onnx(bytes: &[u8]) -> bool {
    ModelProto::parse_from_bytes(bytes)
        .is_ok_and(|m| m.graph.as_ref().is_some_and(|g| !g.node.is_empty()))
}

/// Loads `path`, reading external tensor data from files next to it.
pub fn load(path: &Path, opts: &OnnxOptions) -> Result<Model> {
    let file_err = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read model: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut external = |location: &str| -> Result<Vec<u8>> {
        if let Some(b) = cache.get(location) {
            return Ok(b.clone());
        }
        let rel = Path::new(location);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Error::Invalid(format!(
                "external data location `{location}` leaves the model's directory"
            )));
        }
        let p = dir.join(rel);
        let b = std::fs::read(&p).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
        cache.insert(location.to_string(), b.clone());
        Ok(b)
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "onnx".into());
    import(&bytes, &mut external, opts, &stem).map_err(|e| file_err(e.to_string()))
}

/// Imports an ONNX model from memory; `external` reads external-data files by location.
pub fn import(
    bytes: &[u8],
    external: &mut dyn FnMut(&str) -> Result<Vec<u8>>,
    opts: &OnnxOptions,
    name: &str,
) -> Result<Model> {
    let proto = ModelProto::parse_from_bytes(bytes)
        .map_err(|e| Error::Model(format!("not a valid ONNX model: {e}")))?;
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| Error::Model("the ONNX model has no graph".into()))?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version);
    if opset < 9 {
        return Err(Error::Model(format!(
            "ONNX opset {opset} is older than 9, the oldest this importer reads; re-export \
             with a newer opset"
        )));
    }
    let mut b = Builder::default();
    for t in &g.initializer {
        let c = tensor::decode(t, external)?;
        b.values.insert(t.name.clone(), Value::Const(Rc::new(c)));
    }
    let input = image_input(g.input.as_slice(), &b)?;
    let (layout, channels, size) = input_geometry(input, opts)?;
    bind_input(&mut b, &input.name, layout, channels, size)?;

    let nodes: Vec<ONode> = g
        .node
        .iter()
        .enumerate()
        .map(|(i, n)| ONode::from_proto(n, i, opset))
        .collect();
    for (n, proto) in nodes.iter().zip(&g.node) {
        if !(proto.domain.is_empty() || proto.domain == "ai.onnx") {
            return Err(n.err(format!(
                "op `{}` of domain `{}` is not supported (only the default ONNX domain is)",
                n.op, proto.domain
            )));
        }
    }
    let output = g
        .output
        .first()
        .ok_or_else(|| graph_err("has no output"))?
        .name
        .clone();
    let known = known_constants(&b, &nodes);
    let lookup = |v: &str| known.get(v).cloned();
    let rw = rewrite::rewrite(nodes.clone(), &output, &lookup);
    for v in rw.nodes.iter().flat_map(|n| &n.inputs).chain([&rw.output]) {
        *b.uses.entry(v.clone()).or_default() += 1;
    }
    for n in &rw.nodes {
        if !fold::try_fold(&mut b, n)? {
            ops::import(&mut b, n)?;
        }
    }
    let logits = match b.values.get(&rw.output) {
        Some(Value::Act(a)) => a.clone(),
        Some(Value::Const(_)) => return Err(graph_err("the output does not depend on the image")),
        None => {
            return Err(graph_err(format!(
                "no node computes the output `{}`",
                rw.output
            )));
        }
    };
    // A per-position output (a segmentation net's [N, K, h, w]) keeps its grid for --mask.
    let output_grid = match logits.dims[..] {
        [k, h, w] if logits.plain() && !logits.nhwc && h * w > 1 => Some([k, h, w]),
        _ => None,
    };
    let graph = finish(&mut b, &nodes, &logits)?;
    let default_layer = default_layer(&b)?;
    // Nodes the last pass dropped are no layers.
    let kept: std::collections::HashSet<&str> =
        graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let tokens = b
        .tokens
        .iter()
        .zip(&b.nodes)
        .filter(|(_, node)| kept.contains(node.name.as_str()))
        .filter_map(|(t, node)| t.map(|t| (node.name.clone(), t)))
        .collect();
    let explains = match &rw.softmax {
        Some(s) => format!("the input of the final Softmax (node `{s}`)"),
        None => format!("the output `{}`", rw.output),
    };
    let model_name = if g.name.is_empty() || g.name == "main_graph" {
        name.to_string()
    } else {
        g.name.clone()
    };
    Ok(Model {
        arch: model_name,
        graph,
        weights: std::mem::take(&mut b.weights),
        default_layer,
        input_size: size,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        classes: Vec::new(),
        output: Output::Softmax,
        explains,
        tokens,
        output_grid,
    })
}

/// The one graph input that is not an initializer.
fn image_input<'a>(inputs: &'a [ValueInfoProto], b: &Builder) -> Result<&'a ValueInfoProto> {
    let real: Vec<&ValueInfoProto> = inputs
        .iter()
        .filter(|i| !b.values.contains_key(&i.name))
        .collect();
    match real[..] {
        [one] => Ok(one),
        _ => Err(graph_err(format!(
            "has {} inputs ({}); the engine explains models with one image input",
            real.len(),
            real.iter()
                .map(|i| format!("`{}`", i.name))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Most channels an image input may have (RGB, or tensors such as grayscale or RGBA).
const MAX_CHANNELS: usize = 4;

/// The input's layout, channels and `[H, W]`, from its shape and the options.
fn input_geometry(
    input: &ValueInfoProto,
    opts: &OnnxOptions,
) -> Result<(Layout, usize, [usize; 2])> {
    let bad = |m: String| Error::Model(format!("input `{}`: {m}", input.name));
    let dims: Vec<Option<usize>> = input
        .type_
        .as_ref()
        .and_then(|t| t.tensor_type().shape.as_ref().map(|s| s.dim.clone()))
        .ok_or_else(|| bad("has no tensor shape".into()))?
        .iter()
        .map(|d| {
            d.has_dim_value()
                .then(|| d.dim_value())
                .filter(|&v| v > 0)
                .map(|v| v as usize)
        })
        .collect();
    if dims.len() != 4 {
        return Err(bad(format!(
            "has rank {}; an image input is [N, 3, H, W] or [N, H, W, 3]",
            dims.len()
        )));
    }
    // The importer runs the graph at batch 1: reshape targets folded at another fixed batch
    // would be read as one image's.
    if let Some(n) = dims[0].filter(|&n| n > 1) {
        return Err(bad(format!(
            "has a fixed batch of {n} ({}); export the model at batch 1 or with a dynamic \
             batch axis",
            show_dims(&dims)
        )));
    }
    let layout = match opts.layout {
        Some(l) => l,
        None if dims[1] == Some(3) => Layout::Nchw,
        None if dims[3] == Some(3) => Layout::Nhwc,
        None if dims[1].is_some_and(|c| c <= MAX_CHANNELS) => Layout::Nchw,
        None if dims[3].is_some_and(|c| c <= MAX_CHANNELS) => Layout::Nhwc,
        None => {
            return Err(bad(format!(
                "shape {} is neither [N, C, H, W] nor [N, H, W, C] with C of 1 to 4; pass --layout",
                show_dims(&dims)
            )));
        }
    };
    let (c, hw) = match layout {
        Layout::Nchw => (dims[1], [dims[2], dims[3]]),
        Layout::Nhwc => (dims[3], [dims[1], dims[2]]),
    };
    // A dynamic channel count is taken as RGB.
    let channels = c.unwrap_or(3);
    if !(1..=MAX_CHANNELS).contains(&channels) {
        return Err(bad(format!(
            "shape {} has {channels} channels; the engine takes 1 to {MAX_CHANNELS} (RGB \
             images, or tensors)",
            show_dims(&dims),
        )));
    }
    let size = match (hw, opts.size) {
        ([Some(h), Some(w)], None) => [h, w],
        ([Some(h), Some(w)], Some(s)) if s == [h, w] => s,
        ([Some(h), Some(w)], Some(s)) => {
            return Err(Error::Invalid(format!(
                "--size {}x{}: this ONNX model's input is fixed at {h}x{w}",
                s[0], s[1]
            )));
        }
        (_, Some(s)) => s,
        _ => {
            return Err(Error::Invalid(format!(
                "the ONNX model's input `{}` has a dynamic height or width ({}); pass --size HxW",
                input.name,
                show_dims(&dims)
            )));
        }
    };
    if size
        .iter()
        .any(|&d| d == 0 || d > crate::input::MAX_INPUT_SIDE)
    {
        return Err(bad(format!(
            "input size {}x{} is out of range (1..={})",
            size[0],
            size[1],
            crate::input::MAX_INPUT_SIDE
        )));
    }
    Ok((layout, channels, size))
}

fn show_dims(dims: &[Option<usize>]) -> String {
    let v: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |v| v.to_string()))
        .collect();
    format!("[{}]", v.join(", "))
}

/// Node 0: the image batch, transposed to channels-last for an NHWC model.
fn bind_input(
    b: &mut Builder,
    name: &str,
    layout: Layout,
    channels: usize,
    [h, w]: [usize; 2],
) -> Result<()> {
    let n = ONode {
        name: name.to_string(),
        op: "Input".into(),
        inputs: Vec::new(),
        outputs: vec![name.to_string()],
        attrs: Vec::new(),
        scopes: Vec::new(),
        opset: 0,
    };
    let node = b.push_input(name, channels, [h, w]);
    let act = match layout {
        Layout::Nchw => b.act_of(&n, node, vec![channels, h, w], false)?,
        Layout::Nhwc => {
            let op = Op::Transpose(Transpose { perm: [1, 2, 0] });
            let t = b.push(&n, &format!("{name}:nhwc"), op, &[node])?;
            b.act_of(&n, t, vec![h, w, channels], true)?
        }
    };
    b.values.insert(name.to_string(), Value::Act(act));
    Ok(())
}

/// Initializers and `Constant` nodes, for the rewrite pass's pattern checks.
fn known_constants(b: &Builder, nodes: &[ONode]) -> HashMap<String, Const> {
    let mut k: HashMap<String, Const> = b
        .values
        .iter()
        .filter_map(|(name, v)| match v {
            Value::Const(c) if c.len() <= 64 => Some((name.clone(), (**c).clone())),
            _ => None,
        })
        .collect();
    for n in nodes.iter().filter(|n| n.op == "Constant") {
        let mut scratch = Builder::default();
        if fold::try_fold(&mut scratch, n).is_ok()
            && let Some(Value::Const(c)) = scratch.values.get(&n.outputs[0])
        {
            k.insert(n.outputs[0].clone(), (**c).clone());
        }
    }
    k
}

/// The graph, its output last and shaped `[K, 1, 1]`, with every ONNX value name, node
/// name and module path that reaches an IR node as an alias.
fn finish(b: &mut Builder, nodes: &[ONode], logits: &Act) -> Result<Graph> {
    let k: usize = logits.dims.iter().product();
    let mut out = logits.node;
    if out != b.nodes.len() - 1 || b.shapes[out] != [k, 1, 1] {
        let n = ONode {
            name: "logits".into(),
            op: "Reshape".into(),
            inputs: Vec::new(),
            outputs: vec!["logits".into()],
            attrs: Vec::new(),
            scopes: Vec::new(),
            opset: 0,
        };
        let op = Op::Reshape(crate::graph::Reshape { shape: [k, 1, 1] });
        out = b.push(&n, "logits", op, &[out])?;
    }
    if out != b.nodes.len() - 1 {
        return Err(graph_err("the output is not the last node"));
    }
    let mut aliases: BTreeMap<String, usize> = BTreeMap::new();
    let names: std::collections::HashSet<&str> = b.nodes.iter().map(|n| n.name.as_str()).collect();
    let node_of = |v: &str| match b.values.get(v) {
        Some(Value::Act(a)) => Some(a.node),
        _ => None,
    };
    for (v, val) in &b.values {
        if let Value::Act(a) = val
            && !names.contains(v.as_str())
        {
            aliases.insert(v.clone(), a.node);
        }
    }
    // A module's output is its last node's; nodes come in order, so later ones overwrite.
    for n in nodes {
        let Some(node) = n.outputs.first().and_then(|o| node_of(o)) else {
            continue;
        };
        if !names.contains(n.name.as_str()) {
            aliases.insert(n.name.clone(), node);
        }
        for s in &n.scopes {
            if !names.contains(s.as_str()) {
                aliases.insert(s.clone(), node);
            }
        }
    }
    let mut graph = Graph {
        nodes: b.nodes.clone(),
        aliases,
    };
    for t in matmul_scale::fold(&mut graph, &b.weights) {
        b.weights.tensors.remove(&t);
    }
    graph.validate()?;
    Ok(graph)
}

/// The layer to explain by default. In a transformer, the last token LayerNorm before the
/// last attention Softmax: the last block's first norm, pytorch-grad-cam's `blocks[-1].norm1`
/// (later token layers reach the head through the class token alone). Otherwise the last
/// channels-first 4-D output with more than one position: the features before the pool.
fn default_layer(b: &Builder) -> Result<String> {
    let is_norm = |i: usize| matches!(b.nodes[i].op, Op::LayerNorm(_));
    let token_norm = |i: usize| {
        b.tokens[i].is_some()
            && (is_norm(i)
                || matches!(b.nodes[i].op, Op::Reshape(_)) && is_norm(b.nodes[i].inputs[0]))
    };
    let softmax = b.nodes.iter().rposition(|n| matches!(n.op, Op::Softmax(_)));
    if let Some(i) = softmax.and_then(|s| (0..s).rev().find(|&i| token_norm(i))) {
        return Ok(b.nodes[i].name.clone());
    }
    b.spatial
        .iter()
        .rposition(|&s| s)
        .map(|i| b.nodes[i].name.clone())
        .ok_or_else(|| graph_err("has no 4-D feature map to explain"))
}
