#include "base/json.h"

#include <limits>

#include "gtest/gtest.h"

namespace ferry {
namespace {

TEST(Json, WritesFieldsInOrderWithEscapes) {
  JsonObject inner;
  inner.Add("p50", 12.5);
  JsonObject o;
  o.Add("name", "a\"b\\c\n")
      .Add("ok", true)
      .Add("n", uint64_t{18446744073709551615u})
      .Add("neg", int64_t{-3})
      .Add("ratio", 0.25)
      .Add("bad", std::numeric_limits<double>::quiet_NaN())
      .Add("inner", inner)
      .Add("list", std::vector<double>{1, 2.5});
  EXPECT_EQ(o.ToString(),
            "{\"name\":\"a\\\"b\\\\c\\n\",\"ok\":true,\"n\":18446744073709551615,"
            "\"neg\":-3,\"ratio\":0.25,\"bad\":null,\"inner\":{\"p50\":12.5},"
            "\"list\":[1,2.5]}");
}

}  // namespace
}  // namespace ferry
