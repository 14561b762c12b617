//! PyTorch module paths of ONNX nodes, so `--layer features.12` names the output of the
//! last node in that module's scope. The TorchScript exporter writes the scopes into node
//! names (`/features/features.12/block/block.0/Conv`); the dynamo exporter (torch >= 2.9)
//! into each node's `pkg.torch.onnx.name_scopes` metadata (`['', 'layer2', 'layer2.1',
//! 'layer2.1.relu', 'relu_7']`, full paths, the last entry the traced op's own name).

use onnx_protobuf::StringStringEntryProto;

const DYNAMO_KEY: &str = "pkg.torch.onnx.name_scopes";

/// The module paths enclosing a node, outermost first.
pub fn scopes(name: &str, metadata: &[StringStringEntryProto]) -> Vec<String> {
    if let Some(m) = metadata.iter().find(|m| m.key == DYNAMO_KEY) {
        return dynamo_scopes(&m.value);
    }
    torchscript_scopes(name)
}

/// `['', 'layer2', 'layer2.1', 'relu_7']` to `[layer2, layer2.1]`: the last entry names
/// the op, not a module.
fn dynamo_scopes(list: &str) -> Vec<String> {
    let items: Vec<String> = list
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
        .collect();
    let n = items.len().saturating_sub(1);
    items
        .into_iter()
        .take(n)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `/layer4/layer4.1/conv2/Conv` to `[layer4, layer4.1, layer4.1.conv2]`: a component that
/// extends the previous one (`layer4.1` after `layer4`) replaces it, any other appends.
fn torchscript_scopes(name: &str) -> Vec<String> {
    if !name.starts_with('/') {
        return Vec::new();
    }
    let parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
    let mut out: Vec<String> = Vec::new();
    let mut last = "";
    for comp in parts.iter().take(parts.len().saturating_sub(1)) {
        let path = match out.last() {
            None => comp.to_string(),
            Some(prev) if !last.is_empty() && comp.starts_with(&format!("{last}.")) => {
                format!("{}{comp}", &prev[..prev.len() - last.len()])
            }
            Some(prev) => format!("{prev}.{comp}"),
        };
        out.push(path);
        last = comp;
    }
    out
}

/// Up to `k` of `names` closest to `query` (edit distance, with a bonus for sharing a
/// prefix), for "unknown layer" messages on graphs with hundreds of names.
pub fn nearest<'a>(query: &str, names: &'a [String], k: usize) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .map(|n| {
            let d = strsim::levenshtein(query, n);
            let prefix = query
                .chars()
                .zip(n.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (d.saturating_sub(prefix / 2), n.as_str())
        })
        .collect();
    scored.sort();
    scored.into_iter().take(k).map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchscript_names_give_module_paths() {
        assert_eq!(
            torchscript_scopes("/layer4/layer4.1/conv2/Conv"),
            ["layer4", "layer4.1", "layer4.1.conv2"]
        );
        assert_eq!(
            torchscript_scopes("/features/features.1/features.1.0/block/block.0/Conv"),
            [
                "features",
                "features.1",
                "features.1.0",
                "features.1.0.block",
                "features.1.0.block.0"
            ]
        );
        assert!(torchscript_scopes("/Flatten").is_empty());
        assert!(torchscript_scopes("node_Conv_3").is_empty());
    }

    #[test]
    fn dynamo_metadata_gives_module_paths() {
        assert_eq!(
            dynamo_scopes("['', 'layer2', 'layer2.1', 'layer2.1.relu', 'relu_7']"),
            ["layer2", "layer2.1", "layer2.1.relu"]
        );
        assert!(dynamo_scopes("['', 'add']").is_empty());
    }

    #[test]
    fn nearest_prefers_close_names() {
        let names: Vec<String> = ["layer1", "layer4", "layer4.1", "fc", "features.12"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(nearest("layer5", &names, 2), ["layer1", "layer4"]);
        assert_eq!(nearest("features.13", &names, 1), ["features.12"]);
    }
}
