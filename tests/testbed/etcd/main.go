// Command etcd is the test bed's etcd, built from go.etcd.io/etcd/server/v3 because
// Debian's etcd 3.4 is too old for current kube-apiservers and release downloads are
// not reachable. It is exactly etcd's own entry point.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
