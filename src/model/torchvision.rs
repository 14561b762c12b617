//! Graphs of torchvision's VGG and ResNet families, named by torchvision module paths.

use crate::error::{Error, Result};
use crate::graph::{
    AdaptiveAvgPool2d, Add, BatchNorm2d, Conv2d, Dropout, Flatten, Graph, Input, Linear, MaxPool2d,
    Node, Op, Relu,
};
use crate::weights::Weights;
use std::collections::BTreeMap;

pub const ARCHS: &[&str] = &[
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
];

const BN_EPS: f64 = 1e-5;

/// Builds the graph for `arch`, taking num_classes (and VGG's hidden width) from the weights,
/// then checks every tensor's presence and shape.
pub fn build(arch: &str, weights: &Weights) -> Result<Graph> {
    let graph = match arch {
        "vgg11" | "vgg11_bn" | "vgg13" | "vgg13_bn" | "vgg16" | "vgg16_bn" | "vgg19"
        | "vgg19_bn" => vgg(arch, weights)?,
        "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152" => resnet(arch, weights)?,
        _ => {
            return Err(Error::Model(format!(
                "unknown --arch `{arch}`; supported: {}",
                ARCHS.join(", ")
            )));
        }
    };
    graph.validate()?;
    weights.check(&graph.tensors())?;
    Ok(graph)
}

/// Guesses the architecture from the tensor names of a torchvision state dict.
pub fn infer_arch(weights: &Weights) -> Option<&'static str> {
    let has = |n: &str| weights.tensors.contains_key(n);
    if has("features.0.weight") {
        let convs = weights
            .tensors
            .iter()
            .filter(|(k, t)| {
                k.starts_with("features.") && k.ends_with(".weight") && t.shape.len() == 4
            })
            .count();
        let bn = has("features.1.running_mean");
        return match (convs, bn) {
            (8, false) => Some("vgg11"),
            (8, true) => Some("vgg11_bn"),
            (10, false) => Some("vgg13"),
            (10, true) => Some("vgg13_bn"),
            (13, false) => Some("vgg16"),
            (13, true) => Some("vgg16_bn"),
            (16, false) => Some("vgg19"),
            (16, true) => Some("vgg19_bn"),
            _ => None,
        };
    }
    if has("conv1.weight") && has("fc.weight") {
        let blocks = |l: usize| {
            (0..64)
                .take_while(|b| has(&format!("layer{l}.{b}.conv1.weight")))
                .count()
        };
        let counts = [blocks(1), blocks(2), blocks(3), blocks(4)];
        let bottleneck = has("layer1.0.conv3.weight");
        return match (counts, bottleneck) {
            ([2, 2, 2, 2], false) => Some("resnet18"),
            ([3, 4, 6, 3], false) => Some("resnet34"),
            ([3, 4, 6, 3], true) => Some("resnet50"),
            ([3, 4, 23, 3], true) => Some("resnet101"),
            ([3, 8, 36, 3], true) => Some("resnet152"),
            _ => None,
        };
    }
    None
}

/// The layer pytorch-grad-cam users pick by default: the last conv block's output.
pub fn default_layer(arch: &str, graph: &Graph) -> String {
    if arch.starts_with("resnet") {
        return "layer4".into();
    }
    graph
        .nodes
        .iter()
        .rev()
        .find(|n| n.name.starts_with("features.") && n.op == Op::Relu(Relu))
        .map(|n| n.name.clone())
        .unwrap_or_else(|| graph.nodes[graph.output()].name.clone())
}

struct Builder {
    nodes: Vec<Node>,
    aliases: BTreeMap<String, usize>,
}

impl Builder {
    fn new() -> Self {
        Self {
            nodes: vec![Node {
                name: "input".into(),
                op: Op::Input(Input { channels: 3 }),
                inputs: vec![],
            }],
            aliases: BTreeMap::new(),
        }
    }
    fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.nodes.len() - 1
    }
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        x: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> usize {
        let op = Op::Conv2d(Conv2d {
            weight: format!("{name}.weight"),
            bias: bias.then(|| format!("{name}.bias")),
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [stride, stride],
            padding: [pad, pad],
            dilation: [1, 1],
            groups: 1,
            padding_end: None,
        });
        self.push(name, op, vec![x])
    }
    fn bn(&mut self, name: &str, x: usize, c: usize) -> usize {
        let op = Op::BatchNorm2d(BatchNorm2d {
            prefix: name.into(),
            channels: c,
            eps: BN_EPS,
        });
        self.push(name, op, vec![x])
    }
    fn linear(&mut self, name: &str, x: usize, fin: usize, fout: usize) -> usize {
        let op = Op::Linear(Linear {
            weight: format!("{name}.weight"),
            bias: Some(format!("{name}.bias")),
            in_features: fin,
            out_features: fout,
            axis: 0,
        });
        self.push(name, op, vec![x])
    }
    fn finish(self) -> Graph {
        Graph {
            nodes: self.nodes,
            aliases: self.aliases,
        }
    }
}

fn dim(weights: &Weights, name: &str, axis: usize) -> Result<usize> {
    let t = weights.get(name)?;
    t.shape.get(axis).copied().ok_or_else(|| Error::Tensor {
        name: name.into(),
        message: format!(
            "has shape {:?}, expected at least {} dimensions",
            t.shape,
            axis + 1
        ),
    })
}

fn vgg(arch: &str, weights: &Weights) -> Result<Graph> {
    const M: usize = 0;
    let cfg: &[usize] = match arch.trim_end_matches("_bn") {
        "vgg11" => &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
        "vgg13" => &[
            64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M,
        ],
        "vgg16" => &[
            64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M,
        ],
        _ => &[
            64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512,
            512, M,
        ],
    };
    let bn = arch.ends_with("_bn");
    let mut b = Builder::new();
    let mut x = 0;
    let mut cin = 3;
    let mut i = 0;
    for &v in cfg {
        if v == M {
            let op = Op::MaxPool2d(MaxPool2d {
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: false,
            });
            x = b.push(format!("features.{i}"), op, vec![x]);
            i += 1;
            continue;
        }
        x = b.conv(&format!("features.{i}"), x, cin, v, 3, 1, 1, true);
        i += 1;
        if bn {
            x = b.bn(&format!("features.{i}"), x, v);
            i += 1;
        }
        x = b.push(format!("features.{i}"), Op::Relu(Relu), vec![x]);
        i += 1;
        cin = v;
    }
    b.aliases.insert("features".into(), x);
    x = b.push(
        "avgpool",
        Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [7, 7] }),
        vec![x],
    );
    x = b.push("flatten", Op::Flatten(Flatten), vec![x]);
    let hidden = dim(weights, "classifier.0.weight", 0)?;
    let hidden2 = dim(weights, "classifier.3.weight", 0)?;
    let classes = dim(weights, "classifier.6.weight", 0)?;
    x = b.linear("classifier.0", x, cin * 49, hidden);
    x = b.push("classifier.1", Op::Relu(Relu), vec![x]);
    x = b.push("classifier.2", Op::Dropout(Dropout), vec![x]);
    x = b.linear("classifier.3", x, hidden, hidden2);
    x = b.push("classifier.4", Op::Relu(Relu), vec![x]);
    x = b.push("classifier.5", Op::Dropout(Dropout), vec![x]);
    x = b.linear("classifier.6", x, hidden2, classes);
    b.aliases.insert("classifier".into(), x);
    Ok(b.finish())
}

fn resnet(arch: &str, weights: &Weights) -> Result<Graph> {
    let (blocks, bottleneck) = match arch {
        "resnet18" => ([2, 2, 2, 2], false),
        "resnet34" => ([3, 4, 6, 3], false),
        "resnet50" => ([3, 4, 6, 3], true),
        "resnet101" => ([3, 4, 23, 3], true),
        _ => ([3, 8, 36, 3], true),
    };
    let expansion = if bottleneck { 4 } else { 1 };
    let mut b = Builder::new();
    let mut x = b.conv("conv1", 0, 3, 64, 7, 2, 3, false);
    x = b.bn("bn1", x, 64);
    x = b.push("relu", Op::Relu(Relu), vec![x]);
    let pool = Op::MaxPool2d(MaxPool2d {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
    });
    x = b.push("maxpool", pool, vec![x]);
    let mut inplanes = 64;
    for (li, &n) in blocks.iter().enumerate() {
        let planes = 64 << li;
        for bi in 0..n {
            let stride = if li > 0 && bi == 0 { 2 } else { 1 };
            let p = format!("layer{}.{bi}", li + 1);
            let identity = x;
            let out_c = planes * expansion;
            let mut y;
            if bottleneck {
                y = b.conv(&format!("{p}.conv1"), x, inplanes, planes, 1, 1, 0, false);
                y = b.bn(&format!("{p}.bn1"), y, planes);
                y = b.push(format!("{p}.relu"), Op::Relu(Relu), vec![y]);
                y = b.conv(
                    &format!("{p}.conv2"),
                    y,
                    planes,
                    planes,
                    3,
                    stride,
                    1,
                    false,
                );
                y = b.bn(&format!("{p}.bn2"), y, planes);
                // torchvision reuses one ReLU module; later uses get a suffix.
                y = b.push(format!("{p}.relu:1"), Op::Relu(Relu), vec![y]);
                y = b.conv(&format!("{p}.conv3"), y, planes, out_c, 1, 1, 0, false);
                y = b.bn(&format!("{p}.bn3"), y, out_c);
            } else {
                y = b.conv(
                    &format!("{p}.conv1"),
                    x,
                    inplanes,
                    planes,
                    3,
                    stride,
                    1,
                    false,
                );
                y = b.bn(&format!("{p}.bn1"), y, planes);
                y = b.push(format!("{p}.relu"), Op::Relu(Relu), vec![y]);
                y = b.conv(&format!("{p}.conv2"), y, planes, planes, 3, 1, 1, false);
                y = b.bn(&format!("{p}.bn2"), y, planes);
            }
            let shortcut = if stride != 1 || inplanes != out_c {
                let d = b.conv(
                    &format!("{p}.downsample.0"),
                    x,
                    inplanes,
                    out_c,
                    1,
                    stride,
                    0,
                    false,
                );
                let d = b.bn(&format!("{p}.downsample.1"), d, out_c);
                b.aliases.insert(format!("{p}.downsample"), d);
                d
            } else {
                identity
            };
            let sum = b.push(format!("{p}.add"), Op::Add(Add), vec![y, shortcut]);
            // The block's final ReLU is the block's output, so it carries the block's name.
            x = b.push(p.clone(), Op::Relu(Relu), vec![sum]);
            inplanes = out_c;
        }
        b.aliases.insert(format!("layer{}", li + 1), x);
    }
    x = b.push(
        "avgpool",
        Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] }),
        vec![x],
    );
    x = b.push("flatten", Op::Flatten(Flatten), vec![x]);
    let classes = dim(weights, "fc.weight", 0)?;
    b.linear("fc", x, inplanes, classes);
    Ok(b.finish())
}

/// Tensor names and shapes of `arch`'s torchvision state dict with `num_classes` outputs
/// (without the integer `num_batches_tracked` buffers).
pub fn state_dict_spec(arch: &str, num_classes: usize) -> Result<Vec<(String, Vec<usize>)>> {
    // The builders read only these shapes from the weights.
    let mut stub = Weights::default();
    let mut put = |name: &str, shape: Vec<usize>| {
        stub.tensors.insert(
            name.to_string(),
            crate::weights::Tensor {
                shape,
                data: Vec::new(),
            },
        );
    };
    put("classifier.0.weight", vec![4096, 512 * 49]);
    put("classifier.3.weight", vec![4096, 4096]);
    put("classifier.6.weight", vec![num_classes, 4096]);
    put("fc.weight", vec![num_classes, 512]);
    let graph = match arch {
        a if a.starts_with("vgg") && ARCHS.contains(&a) => vgg(a, &stub)?,
        a if a.starts_with("resnet") && ARCHS.contains(&a) => resnet(a, &stub)?,
        _ => {
            return Err(Error::Model(format!(
                "unknown arch `{arch}`; supported: {}",
                ARCHS.join(", ")
            )));
        }
    };
    Ok(graph.tensors())
}
