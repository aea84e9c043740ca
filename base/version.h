// The release version of this build ("0.5.0"), from the VERSION file.
#ifndef FERRY_BASE_VERSION_H_
#define FERRY_BASE_VERSION_H_

namespace ferry {

const char* FerryVersion();

}  // namespace ferry

#endif  // FERRY_BASE_VERSION_H_
