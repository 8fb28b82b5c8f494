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
}
