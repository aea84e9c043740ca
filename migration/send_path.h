// How the source reads guest memory into the page frames it sends
// (FrameData), chosen once per process by measuring this host.
//
// Sending a frame that references guest memory makes the kernel read each
// page through the VM's mapping. On most hosts that costs one copy. Under
// a hypervisor that shadows the guest kernel's page tables (a paravirtual
// one such as PVM), the first kernel access to each page of a user
// mapping costs a shadow-paging fault in the host: 7 us a page measured
// here, 0.55 GB/s, a quarter of what the rest of the path carries. Reading
// the same pages through the file (pread: the page cache, via the kernel's
// own mapping) costs no such fault, and the frame then owns its bytes.
//
// The probe times both on fresh memory files: the kernel copying 2 MiB of
// just-written pages out of their mapping (what a referencing frame
// costs), against reading them through the file into a buffer and the
// kernel copying that buffer (what a copied frame costs). The copy wins
// only where the first is over 1.5x the second; elsewhere frames
// reference memory, as before. 30-80 ms where the fault exists, a few ms
// where it does not. ferryd (VMs in-process) and ferry-vmm run it at
// start, before any guest runs in the process.
//
//   const SendPathChoice& c = ChooseSendPath();
//   EncodePageFrame(memory, pages, phase, round, on_page, c.data);
#ifndef FERRY_MIGRATION_SEND_PATH_H_
#define FERRY_MIGRATION_SEND_PATH_H_

#include <string>

#include "absl/status/statusor.h"
#include "migration/page_frame.h"

namespace ferry::migration {

struct SendPathChoice {
  FrameData data = FrameData::kReference;
  // GB/s of each way in the probe (0: not measured).
  double reference_gbps = 0;
  double copy_gbps = 0;
  // For the report: which way, and why.
  std::string reason;
};

// Measures both ways once (best of three fresh memory files each).
absl::StatusOr<SendPathChoice> ProbeSendPath();

// The process's choice: ProbeSendPath() on the first call, cached; should
// the probe fail, frames reference memory and the reason says why.
// Thread-safe.
const SendPathChoice& ChooseSendPath();

// "reference" or "copy".
const char* FrameDataName(FrameData data);

}  // namespace ferry::migration

#endif  // FERRY_MIGRATION_SEND_PATH_H_
