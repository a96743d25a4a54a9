// Tensor factories.
#include "factory.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

namespace latent {

Tensor full(const Shape& shape, double value, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  t.fill_(value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype) { return full(shape, 0.0, dtype); }
Tensor ones(const Shape& shape, DType dtype) { return full(shape, 1.0, dtype); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape(), t.dtype()); }
Tensor full_like(const Tensor& t, double value) { return full(t.shape(), value, t.dtype()); }
Tensor scalar_tensor(double value, DType dtype) { return full({}, value, dtype); }

Tensor borrowed_tensor(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> keep_alive) {
  if (!keep_alive) fail("borrowed_tensor: keep_alive must be set (an empty one hands the memory to the allocator)");
  if (reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) != 0)
    fail("borrowed_tensor: {} data at {} is not aligned to {} bytes", dtype_name(dtype), data, dtype_size(dtype));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(data, static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype),
                                            std::move(keep_alive));
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor empty_uncached(const Shape& shape, DType dtype) {
  constexpr size_t kOwnMappingFrom = size_t{1} << 20;
  for (int64_t s : shape)
    if (s < 0) fail("empty_uncached: negative size in shape {}", shape_str(shape));
  const size_t nbytes = static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype);
  if (nbytes < kOwnMappingFrom) return Tensor::empty(shape, dtype);
  void* data = ::mmap(nullptr, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) fail("empty_uncached: cannot map {} bytes: {}", nbytes, std::strerror(errno));
  return borrowed_tensor(data, shape, dtype, std::shared_ptr<void>(data, [nbytes](void* p) { ::munmap(p, nbytes); }));
}

Tensor arange(int64_t n, DType dtype) { return arange(0, n, 1, dtype); }

Tensor arange(int64_t start, int64_t end, int64_t step, DType dtype) {
  if (step == 0) fail("arange: step must be non-zero");
  const int64_t n = std::max<int64_t>(0, (end - start + step + (step > 0 ? -1 : 1)) / step);
  Tensor t = Tensor::empty({n}, dtype);
  dispatch(dtype, [&]<class T>() {
    T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(start + i * step);
  });
  return t;
}

template <class T> Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
  if (shape_numel(shape) != static_cast<int64_t>(values.size()))
    fail("from_vector: {} values do not fill shape {}", values.size(), shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  if (!values.empty()) std::memcpy(t.data<T>(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&);
template Tensor from_vector<bfloat16>(const std::vector<bfloat16>&, const Shape&);

}  // namespace latent
