"""Publishing apt repositories to S3 behind CloudFront.

- :mod:`releng.publish.flows`: the publish flows (update-repos --dest, upload-build,
  publish-source, update-indices), built from the parts below;
- :mod:`releng.publish.sync`: S3 URLs, the manifest and the ordered, incremental sync;
- :mod:`releng.publish.lock`: the S3 publish lock (If-None-Match: *, expiry, takeover);
- :mod:`releng.publish.cloudfront`: batched invalidations of changed ``dists/`` paths;
- :mod:`releng.publish.index_pages`: browsable ``index.html`` pages of changed directories.
"""
