//! The push table in memory: every port of the push store (records, journal and lists, retention, the board of
//! senders) with DynamoDB's conditional writes.
