// Every fastvision operator schema, in one place. Kernels register with TORCH_LIBRARY_IMPL in
// their own files (csrc/ops/<family>/<op>_{cpu.cpp,cuda.cu}); fake kernels and autograd are
// registered in Python (python/fastvision/ops/).
#include <torch/library.h>

TORCH_LIBRARY(fastvision, m) {
  // Point clouds (python/fastvision/ops/points.py documents the semantics).
  m.def(
      "knn_points(Tensor p1, Tensor p2, Tensor? lengths1=None, Tensor? lengths2=None, int K=1, "
      "int norm=2, bool return_sorted=True, int method=-1) -> (Tensor dists, Tensor idx)");
  m.def(
      "_knn_points_backward(Tensor p1, Tensor p2, Tensor idx, Tensor grad_dists, int norm) "
      "-> (Tensor grad_p1, Tensor grad_p2)");
  m.def(
      "nn_distance(Tensor p1, Tensor p2, Tensor? lengths1=None, Tensor? lengths2=None, "
      "int norm=2, int method=-1) -> (Tensor d12, Tensor i12, Tensor d21, Tensor i21)");
  m.def(
      "farthest_point_sample(Tensor points, Tensor? lengths, int K, Tensor start_idx, "
      "int method=-1) -> (Tensor idx, Tensor min_dists)");

  // Sampling (python/fastvision/ops/sampling.py documents the semantics).
  m.def(
      "soft_project(Tensor query, Tensor points, Tensor temperature, int k, "
      "Tensor? features=None, float? min_sigma=None, bool hard=False) "
      "-> (Tensor projected, Tensor projected_features, Tensor idx)");
  m.def(
      "_soft_project_backward(Tensor grad_projected, Tensor? grad_projected_features, "
      "Tensor query, Tensor points, Tensor temperature, Tensor idx, Tensor? features, "
      "float? min_sigma, bool hard) "
      "-> (Tensor grad_query, Tensor grad_points, Tensor grad_temperature, Tensor grad_features)");

  // PAD-Net's fused encoder, inference only (python/fastvision/ops/padnet.py documents it).
  m.def(
      "padnet_encoder(Tensor x, Tensor params, int width) "
      "-> (Tensor tap1, Tensor tap2, Tensor tap3)");
  // PAD-Net's decoder (MDR chains), inference only, CPU only: the models' fast path on the CPU.
  m.def(
      "padnet_decoder(Tensor fine, Tensor middle, Tensor deep, Tensor params, int channels, "
      "int chain_stages, int head_kernel) -> Tensor");

  // HyperSeg's patch-wise dynamic convolutions (python/fastvision/ops/patch.py documents them).
  // padding_mode: 0 zeros, 1 reflect, 2 replicate.
  m.def(
      "patch_conv2d(Tensor x, Tensor weight, Tensor? bias, int[2] kernel_size, int[2] stride, "
      "int[2] padding, int[2] dilation, int groups, int padding_mode) -> Tensor");
  m.def(
      "_patch_conv2d_backward(Tensor grad_out, Tensor x, Tensor weight, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, int padding_mode, bool need_x, "
      "bool need_weight, bool need_bias) -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
  m.def(
      "patch_inverted_residual(Tensor x, Tensor weight, Tensor bn1_scale, Tensor bn1_shift, "
      "Tensor bn2_scale, Tensor bn2_shift, Tensor bn3_scale, Tensor bn3_shift, int hidden_channels, "
      "int kernel_size, int padding_mode, bool residual) -> Tensor");
}
