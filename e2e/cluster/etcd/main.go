// Command etcd starts the upstream etcd server. It exists so this module can
// build etcd without the replace directives of etcd's own go.mod.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
