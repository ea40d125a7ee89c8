#include <gtest/gtest.h>

#include "experiments/rouge.h"

using kvx::rouge_l;

// Hand-computed: cand = A B C D E, ref = A C E F. LCS = A C E (3).
// P = 3/5, R = 3/4, F1 = 2·0.6·0.75/1.35 = 0.6666...
TEST(RougeL, HandComputedSubsequence) {
  auto r = rouge_l({1, 2, 3, 4, 5}, {1, 3, 5, 6});
  EXPECT_EQ(r.lcs, 3);
  EXPECT_DOUBLE_EQ(r.precision, 0.6);
  EXPECT_DOUBLE_EQ(r.recall, 0.75);
  EXPECT_NEAR(r.f1, 2.0 / 3.0, 1e-12);
}

// LCS is not contiguous and order matters: cand = B A, ref = A B -> LCS 1, F1 = 0.5.
TEST(RougeL, OrderMatters) {
  auto r = rouge_l({2, 1}, {1, 2});
  EXPECT_EQ(r.lcs, 1);
  EXPECT_DOUBLE_EQ(r.f1, 0.5);
}

// Repeated tokens: cand = A A A, ref = A B A -> LCS 2, P = 2/3, R = 2/3, F1 = 2/3.
TEST(RougeL, RepeatedTokens) {
  auto r = rouge_l({1, 1, 1}, {1, 2, 1});
  EXPECT_EQ(r.lcs, 2);
  EXPECT_NEAR(r.f1, 2.0 / 3.0, 1e-12);
}

TEST(RougeL, EdgeCases) {
  EXPECT_DOUBLE_EQ(rouge_l({}, {}).f1, 1.0);
  EXPECT_DOUBLE_EQ(rouge_l({1}, {}).f1, 0.0);
  EXPECT_DOUBLE_EQ(rouge_l({1, 2}, {3, 4}).f1, 0.0);
  EXPECT_DOUBLE_EQ(rouge_l({7, 8, 9}, {7, 8, 9}).f1, 1.0);
}

// Agreement is positional: A B C vs A C C D -> positions 0 and 2 agree out of 4.
TEST(TokenAgreement, Positional) {
  EXPECT_DOUBLE_EQ(kvx::token_agreement({1, 2, 3}, {1, 3, 3, 4}), 0.5);
  EXPECT_DOUBLE_EQ(kvx::token_agreement({}, {}), 1.0);
}
