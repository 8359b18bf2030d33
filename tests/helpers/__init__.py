"""What the tests share besides fixtures, one module per concern: `paths`, `cli`, `stores`,
`data`, `services`."""
