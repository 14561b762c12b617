// The explained score of a logits row z (`classes` wide from `base`) for target class c, as
// pytorch-grad-cam's target objects define it, and its gradient dscore/dz_k:
//   0 logit    z_c                                ClassifierOutputTarget
//   1 softmax  softmax(z)_c                       ClassifierOutputSoftmaxTarget
//   2 rest     z_c - cross_entropy(z, c)          ClassifierOutputReST (= 2 z_c - logsumexp z)
//   3 binary   z_0 for c = 1, -z_0 for c = 0      BinaryClassifierOutputTarget (one output)
// The importing module defines `fn logit_at(i: u32, src: u32) -> f32` (src picks a buffer).
#import inf

const SCORE_LOGIT: u32 = 0u;
const SCORE_SOFTMAX: u32 = 1u;
const SCORE_REST: u32 = 2u;
const SCORE_BINARY: u32 = 3u;

fn row_logsumexp(base: u32, classes: u32, src: u32) -> f32 {
    var m = neg_inf();
    for (var k = 0u; k < classes; k++) { m = max(m, logit_at(base + k, src)); }
    var s = 0.0;
    for (var k = 0u; k < classes; k++) { s += exp(logit_at(base + k, src) - m); }
    return m + log(s);
}

fn target_score(kind: u32, base: u32, classes: u32, c: u32, src: u32) -> f32 {
    switch kind {
        case 1u: { return exp(logit_at(base + c, src) - row_logsumexp(base, classes, src)); }
        case 2u: { return 2.0 * logit_at(base + c, src) - row_logsumexp(base, classes, src); }
        case 3u: { return select(-1.0, 1.0, c == 1u) * logit_at(base, src); }
        default: { return logit_at(base + c, src); }
    }
}

fn target_score_grad(kind: u32, base: u32, classes: u32, c: u32, k: u32, src: u32) -> f32 {
    let onehot = select(0.0, 1.0, k == c);
    switch kind {
        case 1u: {
            let lse = row_logsumexp(base, classes, src);
            let pc = exp(logit_at(base + c, src) - lse);
            return pc * (onehot - exp(logit_at(base + k, src) - lse));
        }
        case 2u: {
            let lse = row_logsumexp(base, classes, src);
            return 2.0 * onehot - exp(logit_at(base + k, src) - lse);
        }
        case 3u: { return select(-1.0, 1.0, c == 1u); }
        default: { return onehot; }
    }
}
