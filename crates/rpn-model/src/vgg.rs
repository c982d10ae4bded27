//! The VGG16 convolutional body with Keras layer names.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

use crate::conv::{conv2d, Conv};

/// `(block, convs, channels)` of VGG16.
const BLOCKS: [(usize, usize, usize); 5] =
    [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)];

/// Keras `VGG16(include_top=False)` without the last pooling: 13 convs 3×3 "same" + ReLU named
/// `block{b}_conv{i}`, 2×2 max-pools (stride 2, "valid") after blocks 1–4, so the output is the
/// 512-channel `block5_conv3` map at stride 16 — the features seed 002's head reads.
#[derive(Debug, Clone)]
pub struct Vgg16 {
    convs: Vec<(usize, Conv)>,
}

impl Vgg16 {
    /// Builds the 13 convs from `vb` (`block1_conv1` … `block5_conv3`).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let same = Conv2dConfig { padding: 1, ..Default::default() };
        let mut convs = Vec::new();
        let mut c_in = 3;
        for (block, n, c_out) in BLOCKS {
            for i in 1..=n {
                convs.push((
                    block,
                    conv2d(c_in, c_out, 3, same, vb.pp(format!("block{block}_conv{i}")))?,
                ));
                c_in = c_out;
            }
        }
        Ok(Self { convs })
    }

    /// Paths in creation order.
    pub fn keras_creation_order() -> Vec<String> {
        BLOCKS
            .iter()
            .flat_map(|&(b, n, _)| (1..=n).map(move |i| format!("block{b}_conv{i}")))
            .collect()
    }

    /// Total stride of the output (16).
    pub fn stride(&self) -> usize {
        16
    }
}

impl Module for Vgg16 {
    /// NCHW images → NCHW `block5_conv3` features.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, (block, conv)) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.relu()?;
            let last_of_block = self.convs.get(i + 1).is_none_or(|(next, _)| next != block);
            if last_of_block && *block < 5 {
                x = x.max_pool2d(2)?;
            }
        }
        Ok(x)
    }
}
