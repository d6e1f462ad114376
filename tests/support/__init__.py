"""What the tests share: process helpers, fixtures, fault scenarios, ZooKeeper controls."""
