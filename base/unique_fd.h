// UniqueFd: owns one file descriptor and closes it on destruction.
// Move-only. Not thread-safe; an fd shared between threads is owned by one
// object whose lifetime covers all users.
//
//   UniqueFd fd(::memfd_create("x", MFD_CLOEXEC));
//   if (!fd.valid()) return ErrnoStatus("memfd_create", errno);
#ifndef FERRY_BASE_UNIQUE_FD_H_
#define FERRY_BASE_UNIQUE_FD_H_

namespace ferry {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  ~UniqueFd() { Reset(); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership without closing.
  int Release();
  // Closes the current fd (if any) and takes `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

}  // namespace ferry

#endif  // FERRY_BASE_UNIQUE_FD_H_
