// The KVM guest image (guest_main.cc built flat by BUILD.bazel): load it at
// firmware offset 0 (boot.h) and enter at kFirmwareVa.
#ifndef FERRY_VMM_GUEST_GUEST_IMAGE_H_
#define FERRY_VMM_GUEST_GUEST_IMAGE_H_

#include <cstddef>

namespace ferry::vmm::guest {

extern const unsigned char kImage[];
extern const size_t kImage_size;

}  // namespace ferry::vmm::guest

#endif  // FERRY_VMM_GUEST_GUEST_IMAGE_H_
