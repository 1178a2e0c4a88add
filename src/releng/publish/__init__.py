"""Publishing apt repositories to S3 behind CloudFront, and where a repository lives.

- :mod:`releng.publish.location`: ``--repo DIR|s3://BUCKET/PREFIX`` and the one way to open
  a repository for an operation (local: the directory; S3: lock, pull, operate, sync);
- :mod:`releng.publish.flows`: the publish flows (update-repos to S3, sync-repo,
  publish-source, update-indices) and :func:`~releng.publish.flows.open_destination`;
- :mod:`releng.publish.scratch`: the scratch bucket's contract (key layout, completion
  marker, upload-build, the builds to publish), shared with the AWS handlers;
- :mod:`releng.publish.pull`: a bucket's repository state pulled into a work directory;
- :mod:`releng.publish.sync`: the ordered, incremental sync (the transfer);
- :mod:`releng.publish.plan`: what a sync uploads and deletes, as data;
- :mod:`releng.publish.manifest`: the manifest, intent and change records in ``.releng/``;
- :mod:`releng.publish.layout`: the destination's layout: control keys, upload phases, headers;
- :mod:`releng.publish.s3`: the S3 seam: URLs, the client, error mapping, get/list/delete;
- :mod:`releng.publish.lock`: the S3 publish lock (If-None-Match: *, expiry, takeover);
- :mod:`releng.publish.cloudfront`: batched invalidations of changed ``dists/`` paths;
- :mod:`releng.publish.index_pages`: browsable ``index.html`` pages of changed directories.
"""
