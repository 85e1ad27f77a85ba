//! The built-in functions and the sample methods of metrics
//! (`$CPUPercent.GetSample(...)` and the rest).

use super::*;

impl Eval<'_> {
    /// A `doubleVecList` argument list, flattened to one vector.
    pub(super) fn flatten(&mut self, func: Func, args: &[Expr], pos: Pos) -> R<Vec<f64>> {
        let mut out = Vec::new();
        for (i, a) in args.iter().enumerate() {
            let v = self.expr(a)?;
            match v {
                Value::Vec(v) => {
                    self.spend(v.len() as u64, pos)?;
                    out.extend(v);
                }
                other => match self.scalar(&other) {
                    Some(x) => out.push(x),
                    None => {
                        return err(
                            ErrorKind::TypeMismatch,
                            pos,
                            format!(
                                "argument {} of {} must be a double or doubleVec; it is a {}",
                                i + 1,
                                func.name(),
                                other.type_name()
                            ),
                        )
                    }
                },
            }
        }
        Ok(out)
    }

    pub(super) fn call(&mut self, func: Func, args: &[Expr], pos: Pos) -> R<Value> {
        self.spend(1, pos)?;
        let nonempty = |v: &Vec<f64>| -> R<()> {
            if v.is_empty() {
                err(
                    ErrorKind::EmptyList,
                    pos,
                    format!("{} of no values (a GetSample may have returned no samples; check GetSamplePercent first)", func.name()),
                )
            } else {
                Ok(())
            }
        };
        match func {
            Func::Avg => {
                let v = self.flatten(func, args, pos)?;
                nonempty(&v)?;
                Ok(Value::Double(v.iter().sum::<f64>() / v.len() as f64))
            }
            Func::Len => Ok(Value::Double(self.flatten(func, args, pos)?.len() as f64)),
            Func::Sum => Ok(Value::Double(self.flatten(func, args, pos)?.iter().sum())),
            Func::Max | Func::Min | Func::Range => {
                let v = self.flatten(func, args, pos)?;
                nonempty(&v)?;
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                Ok(Value::Double(match func {
                    Func::Max => hi,
                    Func::Min => lo,
                    _ => hi - lo,
                }))
            }
            Func::Norm => Ok(Value::Double(
                self.flatten(func, args, pos)?
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt(),
            )),
            Func::Std => {
                let v = self.flatten(func, args, pos)?;
                nonempty(&v)?;
                if v.len() < 2 {
                    return Ok(Value::Double(0.0));
                }
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
                Ok(Value::Double(var.sqrt()))
            }
            Func::Lg | Func::Ln | Func::Log => self.logarithm(func, args, pos),
            Func::Percentile => {
                let v = self.flatten(func, &args[..1], pos)?;
                let pv = self.expr(&args[1])?;
                let p = self.number(&pv, pos, "the percentile")?;
                if !(0.0..=100.0).contains(&p) {
                    return err(
                        ErrorKind::Domain,
                        pos,
                        format!("percentile {} is outside 0..100", format_number(p)),
                    );
                }
                nonempty(&v)?;
                let mut v = v;
                v.sort_by(f64::total_cmp);
                let rank = p / 100.0 * (v.len() - 1) as f64;
                let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
                let x = v[lo] + (v[hi] - v[lo]) * (rank - lo as f64);
                Ok(Value::Double(x))
            }
            Func::Rand => {
                // xorshift64*: repeatable from the evaluation's seed.
                let mut x = self.rng;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.rng = x;
                let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
                Ok(Value::Double(r as f64 / (1u64 << 53) as f64))
            }
            Func::Stop => {
                self.note(TraceEntry::Stop {
                    line: pos.line,
                    col: pos.col,
                });
                Err(Halt::Stop)
            }
            Func::Time => self.time(args, pos),
            Func::Val => self.val(args, pos),
        }
    }

    /// lg, ln and log: of a double, each value of a vector, or a list.
    pub(super) fn logarithm(&mut self, func: Func, args: &[Expr], pos: Pos) -> R<Value> {
        let f = |x: f64| match func {
            Func::Lg => x.log2(),
            Func::Ln => x.ln(),
            _ => x.log10(),
        };
        let domain = |x: f64| -> R<f64> {
            if x > 0.0 {
                Ok(f(x))
            } else {
                err(
                    ErrorKind::Domain,
                    pos,
                    format!("{} of {} is not a number", func.name(), format_number(x)),
                )
            }
        };
        if args.len() == 1 {
            let v = self.expr(&args[0])?;
            if let Some(x) = self.scalar(&v) {
                return Ok(Value::Double(domain(x)?));
            }
            if let Value::Vec(v) = v {
                self.spend(v.len() as u64, pos)?;
                return Ok(Value::Vec(v.into_iter().map(domain).collect::<R<_>>()?));
            }
            return err(
                ErrorKind::TypeMismatch,
                pos,
                format!(
                    "{} takes a double or doubleVec; this is a {}",
                    func.name(),
                    v.type_name()
                ),
            );
        }
        let v = self.flatten(func, args, pos)?;
        Ok(Value::Vec(v.into_iter().map(domain).collect::<R<_>>()?))
    }

    /// time(): now, or a time read from a string.
    pub(super) fn time(&mut self, args: &[Expr], pos: Pos) -> R<Value> {
        if args.is_empty() {
            return Ok(Value::Time(self.now_ticks()));
        }
        match self.expr(&args[0])? {
            Value::Str(s) if s.is_empty() => Ok(Value::Time(self.now_ticks())),
            Value::Str(s) => match parse_time(&s) {
                Some(t) => Ok(Value::Time(t)),
                None => err(
                    ErrorKind::InvalidTime,
                    pos,
                    format!("time({s:?}): not an RFC 1123 (\"Mon, 06 Oct 2014 10:20:00 GMT\") or W3C-DTF (\"2014-10-06T10:20:00Z\") time"),
                ),
            },
            other => err(
                ErrorKind::TypeMismatch,
                pos,
                format!("time takes a string; this is a {}", other.type_name()),
            ),
        }
    }

    /// val(v, i): the value at index i.
    pub(super) fn val(&mut self, args: &[Expr], pos: Pos) -> R<Value> {
        let v = self.expr(&args[0])?;
        let v = match v {
            Value::Vec(v) => v,
            other => match self.scalar(&other) {
                Some(x) => vec![x],
                None => {
                    return err(
                        ErrorKind::TypeMismatch,
                        pos,
                        format!("val takes a doubleVec; this is a {}", other.type_name()),
                    )
                }
            },
        };
        let iv = self.expr(&args[1])?;
        let i = self.number(&iv, pos, "the index of val")?;
        if i < 0.0 || i.trunc() as usize >= v.len() || !i.is_finite() {
            return err(
                ErrorKind::IndexOutOfRange,
                pos,
                format!(
                    "val index {} is outside a vector of {} values",
                    format_number(i),
                    v.len()
                ),
            );
        }
        Ok(Value::Double(v[i.trunc() as usize]))
    }

    /// A window `(from, to]` in microseconds from look-back intervals or
    /// timestamps; the two ends may come in either order.
    pub(super) fn window_end(&self, v: &Value, pos: Pos, what: &str) -> R<i64> {
        match v {
            Value::Interval(t) => Ok(self.inputs.now_micros.saturating_sub(t / 10)),
            Value::Time(t) => Ok(t / 10),
            other => err(
                ErrorKind::TypeMismatch,
                pos,
                format!("the {what} of a sample window must be a timeinterval or timestamp; this is a {}", other.type_name()),
            ),
        }
    }

    pub(super) fn method(
        &mut self,
        metric: Metric,
        method: Method,
        args: &[Expr],
        pos: Pos,
    ) -> R<Value> {
        let history = self.inputs.history;
        match method {
            Method::Count => Ok(Value::Double(history.samples.len() as f64)),
            Method::GetSamplePeriod => {
                Ok(Value::Interval(history.period_micros.saturating_mul(10)))
            }
            Method::HistoryBeginTime => match history.samples.first() {
                Some(s) => Ok(Value::Time(s.at_micros.saturating_mul(10))),
                None => err(
                    ErrorKind::InsufficientSampleData,
                    pos,
                    format!("{} has no samples yet", metric.name()),
                ),
            },
            Method::GetSample | Method::GetSamplePercent => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.expr(a)?);
                }
                let now = self.inputs.now_micros;
                // `GetSample(n)`: the n most recent samples.
                if method == Method::GetSample {
                    if let Some(n) = self.scalar(&vals[0]) {
                        if vals.len() > 1 {
                            return err(
                                ErrorKind::Arity,
                                pos,
                                "GetSample(count) takes one argument; a window takes GetSample(start [, end] [, percent])",
                            );
                        }
                        if n < 0.0 || !n.is_finite() {
                            return err(
                                ErrorKind::Domain,
                                pos,
                                format!(
                                    "GetSample({}) needs a count of 0 or more",
                                    format_number(n)
                                ),
                            );
                        }
                        let all = history.samples;
                        let k = (n.trunc() as usize).min(all.len());
                        let picked = &all[all.len() - k..];
                        self.spend(picked.len() as u64, pos)?;
                        self.note(TraceEntry::Sample {
                            line: pos.line,
                            col: pos.col,
                            metric: metric.name().into(),
                            method: method.name().into(),
                            from: String::new(),
                            to: String::new(),
                            samples: picked.len(),
                            percent: if n.trunc() == 0.0 {
                                100.0
                            } else {
                                100.0 * k as f64 / n.trunc()
                            },
                            required_percent: None,
                        });
                        return Ok(Value::Vec(picked.iter().map(|s| s.get(metric)).collect()));
                    }
                }
                let start = self.window_end(&vals[0], pos, "start")?;
                let (end, required) = match (vals.get(1), vals.get(2)) {
                    (None, _) => (now, None),
                    (Some(v), None) if self.scalar(v).is_some() && method == Method::GetSample => {
                        (now, self.scalar(v))
                    }
                    (Some(v), third) => {
                        let end = self.window_end(v, pos, "end")?;
                        let req = match third {
                            Some(p) => Some(self.number(p, pos, "the sample percent")?),
                            None => None,
                        };
                        (end, req)
                    }
                };
                let (from, to) = (start.min(end), start.max(end));
                let got = history.window(from, to);
                let possible = history.possible(from, to);
                let percent = if possible <= 0 {
                    if got.is_empty() {
                        0.0
                    } else {
                        100.0
                    }
                } else {
                    (100.0 * got.len() as f64 / possible as f64).min(100.0)
                };
                self.spend(got.len() as u64 + 1, pos)?;
                let stamp = |m: i64| {
                    Utc.timestamp_micros(m)
                        .single()
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                };
                self.note(TraceEntry::Sample {
                    line: pos.line,
                    col: pos.col,
                    metric: metric.name().into(),
                    method: method.name().into(),
                    from: stamp(from),
                    to: stamp(to),
                    samples: got.len(),
                    percent,
                    required_percent: required,
                });
                if method == Method::GetSamplePercent {
                    return Ok(Value::Double(percent));
                }
                if let Some(req) = required {
                    if percent < req {
                        return err(
                            ErrorKind::InsufficientSampleData,
                            pos,
                            format!(
                                "Insufficient data from data set: {} wanted {}%, received {}%",
                                metric.name(),
                                format_number(req),
                                format_number(percent.floor())
                            ),
                        );
                    }
                }
                Ok(Value::Vec(got.iter().map(|s| s.get(metric)).collect()))
            }
        }
    }
}
