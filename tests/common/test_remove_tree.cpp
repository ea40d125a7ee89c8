// kvx::remove_tree against what `rm -rf` does: nested folders and files go, a symbolic link goes
// without what it points to, a missing path is not an error.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "core/common/remove_tree.h"

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

TEST(RemoveTree, NestedFoldersFilesAndLinks) {
  char tmpl[] = "/tmp/kvx-remove-tree-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string root = tmpl, tree = root + "/tree", outside = root + "/outside.txt";
  std::ofstream(outside) << "keep";
  ASSERT_EQ(::mkdir(tree.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tree + "/a").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((tree + "/a/b").c_str(), 0755), 0);
  std::ofstream(tree + "/a/b/file.bin") << "x";
  std::ofstream(tree + "/top.txt") << "y";
  ASSERT_EQ(::symlink(outside.c_str(), (tree + "/a/link").c_str()), 0);
  ASSERT_EQ(::symlink(root.c_str(), (tree + "/loop").c_str()), 0);  // a link to a folder is not entered

  EXPECT_TRUE(kvx::remove_tree(tree));
  EXPECT_FALSE(exists(tree));
  EXPECT_TRUE(exists(outside));
  EXPECT_TRUE(kvx::remove_tree(tree));  // nothing there: nothing to do
  EXPECT_TRUE(kvx::remove_tree(outside));  // a plain file
  EXPECT_FALSE(exists(outside));
  EXPECT_TRUE(kvx::remove_tree(root));
  EXPECT_FALSE(exists(root));
}

}  // namespace
